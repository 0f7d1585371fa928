package watcher

import (
	"context"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/record"

	"github.com/switchyard/switchyard/dataplane"
)

var problems = []dataplane.Problem{
	{Reason: "InvalidExternalIP", Message: `externalIP "x" is not an IP address; ignored`},
	{Reason: "InvalidPort", Message: "port 100% bad"},
}

func TestRecordProblems(t *testing.T) {
	rec := record.NewFakeRecorder(10)
	recordProblems(rec, dataplane.ServiceName{Namespace: "default", Name: "web"}, problems)
	for _, p := range problems {
		select {
		case ev := <-rec.Events:
			want := "Warning " + p.Reason + " " + p.Message
			if ev != want {
				t.Errorf("event %q, want %q", ev, want)
			}
		default:
			t.Fatalf("no event for %s", p.Reason)
		}
	}
}

func TestProblemRecorderCreatesEvents(t *testing.T) {
	client := fake.NewClientset()
	recordFn, stop := NewProblemRecorder(client, "n1")
	defer stop()
	recordFn(dataplane.ServiceName{Namespace: "shop", Name: "web"}, problems[:1])

	deadline := time.Now().Add(10 * time.Second)
	for {
		evs, err := client.CoreV1().Events("shop").List(context.Background(), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(evs.Items) > 0 {
			ev := evs.Items[0]
			obj, src := ev.InvolvedObject, ev.Source
			if obj.Kind != "Service" || obj.APIVersion != "v1" || obj.Name != "web" || ev.Type != "Warning" ||
				ev.Reason != problems[0].Reason || !strings.Contains(ev.Message, problems[0].Message) ||
				src.Component != "switchyard" || src.Host != "n1" {
				t.Errorf("event = %+v", ev)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("no Event created")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
