package main

import (
	"time"

	"github.com/switchyard/switchyard/test/loadgen"
)

// timeline is one worker's buckets of -timeline each, by when a request started; with no bucket
// size it keeps nothing. A worker owns its own, so nothing is shared while the run goes.
type timeline struct {
	start   time.Time
	every   time.Duration
	buckets []loadgen.Bucket
	discard loadgen.Bucket
}

func newTimeline(start time.Time, every time.Duration) timeline {
	return timeline{start: start, every: every, discard: loadgen.Bucket{ErrorKinds: map[string]int64{}}}
}

// at is the bucket of a request that started at t: without a bucket size, one that is never read
// (and never reallocated: this runs once per request of a benchmark).
func (tl *timeline) at(t time.Time) *loadgen.Bucket {
	if tl.every <= 0 {
		return &tl.discard
	}
	i := max(0, int(t.Sub(tl.start)/tl.every))
	for len(tl.buckets) <= i {
		n := len(tl.buckets)
		tl.buckets = append(tl.buckets, loadgen.Bucket{At: (time.Duration(n) * tl.every).Seconds(), ErrorKinds: map[string]int64{}})
	}
	return &tl.buckets[i]
}

// mergeTimelines adds up the workers' buckets slice by slice.
func mergeTimelines(ws []*worker) []loadgen.Bucket {
	var out []loadgen.Bucket
	for _, w := range ws {
		for i, b := range w.timeline.buckets {
			for len(out) <= i {
				out = append(out, loadgen.Bucket{At: w.timeline.buckets[len(out)].At, ErrorKinds: map[string]int64{}})
			}
			o := &out[i]
			o.Requests += b.Requests
			o.Broken += b.Broken
			o.MaxMs = max(o.MaxMs, b.MaxMs)
			for k, n := range b.ErrorKinds {
				o.ErrorKinds[k] += n
			}
		}
	}
	return out
}
