package main

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"
)

// A taken address (kube-proxy's 10256 during a handover) is tried again until it is free or the
// agent stops; other listen errors end at once. Nothing here dials.
func TestListenWaitsForATakenAddress(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := taken.Addr().String()

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		_, err := listenRetrying(ctx, "healthz", addr, time.Millisecond)
		done <- err
	}()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("stopped while the address is taken: %v, want context.Canceled", err)
	}

	got := make(chan net.Listener, 1)
	go func() {
		l, err := listenRetrying(t.Context(), "healthz", addr, time.Millisecond)
		if err != nil {
			t.Error(err)
		}
		got <- l
	}()
	taken.Close()
	if l := <-got; l != nil {
		if l.Addr().String() != addr {
			t.Errorf("listening on %s, want %s", l.Addr(), addr)
		}
		l.Close()
	}

	if _, err := listenRetrying(t.Context(), "healthz", "192.0.2.1:0", time.Millisecond); err == nil {
		t.Error("an address of no interface here: want an error at once")
	}
}
