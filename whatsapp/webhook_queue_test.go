package whatsapp

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestWebhookSerialPerCall checks ref brief: events of one call reach the sink one at a time,
// in arrival order, while different calls are delivered in parallel.
func TestWebhookSerialPerCall(t *testing.T) {
	leakCheck(t)
	const calls, perCall, posters = 24, 12, 6

	var mu sync.Mutex
	inflight := map[string]int{}
	total, maxTotal := 0, 0
	order := map[string][]string{}
	var overlaps atomic.Int32
	allIn := make(chan struct{})
	release := make(chan struct{})
	var delivered atomic.Int32
	done := make(chan struct{})

	sink := func(ctx context.Context, ev CallEvent) {
		mu.Lock()
		inflight[ev.CallID]++
		if inflight[ev.CallID] > 1 {
			overlaps.Add(1)
		}
		total++
		if total > maxTotal {
			maxTotal = total
			if maxTotal == calls {
				close(allIn)
			}
		}
		order[ev.CallID] = append(order[ev.CallID], ev.Event+":"+ev.Status)
		mu.Unlock()
		<-release
		mu.Lock()
		inflight[ev.CallID]--
		total--
		mu.Unlock()
		if delivered.Add(1) == calls*perCall {
			close(done)
		}
	}
	h := newHarness(t, WebhookConfig{StaleAfter: time.Hour}, sink)

	seq := func(i int) (id string, bodies []string) {
		id = fmt.Sprintf("wacid.%02d", i)
		bodies = append(bodies, connectBody(id, testNow))
		for k := 1; k < perCall-1; k++ {
			bodies = append(bodies, statusBody(id, fmt.Sprintf("S%02d", k), testNow))
		}
		return id, append(bodies, terminateBody(id, "COMPLETED", testNow))
	}
	var wg sync.WaitGroup
	errs := make(chan error, posters)
	for p := 0; p < posters; p++ {
		wg.Add(1)
		go func(p int) {
			defer wg.Done()
			// Each poster interleaves the events of its calls, sending each call's events in order.
			var seqs [][]string
			for i := p; i < calls; i += posters {
				_, b := seq(i)
				seqs = append(seqs, b)
			}
			for k := 0; k < perCall; k++ {
				for _, s := range seqs {
					req, _ := http.NewRequest(http.MethodPost, h.srv.URL, strings.NewReader(s[k]))
					req.Header.Set("X-Hub-Signature-256", sign(testSecret, []byte(s[k])))
					resp, err := h.client.Do(req)
					if err != nil {
						errs <- err
						return
					}
					resp.Body.Close()
					if resp.StatusCode != 200 {
						errs <- fmt.Errorf("status %d", resp.StatusCode)
						return
					}
				}
			}
		}(p)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	select { // every call's first event is in the sink at once: calls run in parallel
	case <-allIn:
	case <-time.After(10 * time.Second):
		t.Fatalf("only %d calls in the sink concurrently, want %d", maxTotal, calls)
	}
	close(release)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("delivered %d of %d", delivered.Load(), calls*perCall)
	}
	if n := overlaps.Load(); n != 0 {
		t.Errorf("%d overlapping sink calls for one call id", n)
	}
	for i := 0; i < calls; i++ {
		id, _ := seq(i)
		want := []string{"connect:"}
		for k := 1; k < perCall-1; k++ {
			want = append(want, fmt.Sprintf("status:S%02d", k))
		}
		want = append(want, "terminate:COMPLETED")
		if fmt.Sprint(order[id]) != fmt.Sprint(want) {
			t.Errorf("%s order %v, want %v", id, order[id], want)
		}
	}
	h.w.mu.Lock()
	left := len(h.w.queues)
	h.w.mu.Unlock()
	h.w.Close()
	if left != 0 {
		t.Errorf("%d queues left after draining", left)
	}
}

func TestWebhookPermissionRepliesQueuedPerUser(t *testing.T) {
	leakCheck(t)
	rec := newRecorder()
	h := newHarness(t, WebhookConfig{}, rec.sink)
	reply := func(wamid, resp string) string {
		return valueBody("messages", fmt.Sprintf(`{"messages":[{"from":"5511","from_user_id":"BR.1","id":%q,"timestamp":"1",
			"interactive":{"type":"call_permission_reply","call_permission_reply":{"response":%q}}}]}`, wamid, resp))
	}
	h.mustPost(reply("wamid.1", "accept"))
	h.mustPost(reply("wamid.1", "accept")) // redelivery, deduplicated by wamid
	h.mustPost(reply("wamid.2", "reject"))
	evs := rec.waitFor(t, 2)
	if evs[0].Permission.Response != "accept" || evs[1].Permission.Response != "reject" || evs[0].Kind != EventPermissionReply {
		t.Errorf("got %v", summary(evs))
	}
	if queueKey(&evs[0]) != "user:BR.1" {
		t.Errorf("queue key %q", queueKey(&evs[0]))
	}
	h.w.Close()
	if len(rec.events()) != 2 || h.w.Stats().Rejected["duplicate"] != 1 {
		t.Errorf("events %d stats %+v", len(rec.events()), h.w.Stats())
	}
}

func TestWebhookUnknownCountedNotDelivered(t *testing.T) {
	leakCheck(t)
	rec := newRecorder()
	rec.gate = make(chan struct{}) // a queued event would park its worker and keep its queue
	h := newHarness(t, WebhookConfig{}, rec.sink)
	h.mustPost(valueBody("account_update", `{"event":"ACCOUNT_RESTRICTION"}`))
	h.mustPost(callsBody(`{"id":"wacid.r","event":"call_recording_available"}`))
	h.w.mu.Lock()
	queued := len(h.w.queues)
	h.w.mu.Unlock()
	st := h.w.Stats()
	if queued != 0 || st.Unknown != 2 || st.Received["account_update/account_restriction"] != 1 ||
		st.Received["calls/call_recording_available"] != 1 {
		t.Errorf("queued %d stats %+v", queued, st)
	}
	close(rec.gate)
	h.w.Close()
	if n := len(rec.events()); n != 0 {
		t.Errorf("unknown events delivered: %d", n)
	}

	// With DeliverUnknown they reach the sink, raw payload attached.
	rec2 := newRecorder()
	h2 := newHarness(t, WebhookConfig{DeliverUnknown: true}, rec2.sink)
	h2.mustPost(callsBody(`{"id":"wacid.r","event":"call_recording_available"}`))
	if evs := rec2.waitFor(t, 1); evs[0].Kind != EventUnknown || !strings.Contains(string(evs[0].Raw), "call_recording_available") {
		t.Errorf("got %+v", evs[0])
	}
}

func TestWebhookCloseCancelsSinkAndRefuses(t *testing.T) {
	leakCheck(t)
	entered := make(chan struct{})
	var sawCancel atomic.Bool
	var calls atomic.Int32
	sink := func(ctx context.Context, ev CallEvent) {
		if calls.Add(1) == 1 {
			close(entered)
		}
		<-ctx.Done() // in-flight work that only ends when Close cancels it
		sawCancel.Store(ctx.Err() != nil)
	}
	h := newHarness(t, WebhookConfig{}, sink)
	h.mustPost(statusBody("wacid.c", "A", testNow))
	h.mustPost(statusBody("wacid.c", "B", testNow)) // queued behind the blocked one
	<-entered
	h.w.Close()
	if !sawCancel.Load() || calls.Load() != 1 {
		t.Errorf("sawCancel=%v calls=%d; want the in-flight call cancelled and the queued one dropped", sawCancel.Load(), calls.Load())
	}
	if code := h.postSigned(statusBody("wacid.c", "C", testNow)); code != http.StatusServiceUnavailable {
		t.Errorf("POST after Close = %d, want 503", code)
	}
	if n := h.w.Stats().Rejected["closed"]; n != 2 {
		t.Errorf("closed count %d, want 2 (one dropped event, one refused POST)", n)
	}
	h.w.Close() // idempotent
}

func TestWebhookSinkPanicContained(t *testing.T) {
	leakCheck(t)
	rec := newRecorder()
	sink := func(ctx context.Context, ev CallEvent) {
		if ev.Status == "BOOM" {
			panic("sink bug")
		}
		rec.sink(ctx, ev)
	}
	h := newHarness(t, WebhookConfig{}, sink)
	h.mustPost(statusBody("wacid.p", "BOOM", testNow))
	h.mustPost(statusBody("wacid.p", "AFTER", testNow))
	if evs := rec.waitFor(t, 1); evs[0].Status != "AFTER" {
		t.Errorf("got %+v", evs[0])
	}
}
