package gateway

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ponte-gw/ponte/config"
	"github.com/ponte-gw/ponte/transcode"
)

// Queue mode (answer_then_hunt): ponte accepts the WhatsApp call at once,
// plays ringback or the route's music to the caller, and hunts with no Meta
// deadline: the targets in turn, again and again, for the queue's max_wait;
// then the default department; then the closing announcement, and the call
// ends. When an agent answers, their audio replaces the music in the same
// stream.

// ErrQueueTimeout: nobody answered within the queue time (and the default
// department did not either).
var ErrQueueTimeout = errors.New("gateway: nobody answered within the queue time")

// queueRingback is the ringback played when a queue has no music: Brazil's
// (ITU-T E.180: 425 Hz, 1 s on, 4 s off), the market ponte's users serve.
const queueRingback = "br"

// clipCache loads each announcement file once: a file read per call would put
// disk latency in the call's setup.
type clipCache struct {
	mu    sync.Mutex
	clips map[string]*transcode.Clip
}

func (cc *clipCache) get(path string) (*transcode.Clip, error) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if c, ok := cc.clips[path]; ok {
		return c, nil
	}
	c, err := transcode.LoadClip(path)
	if err != nil {
		return nil, err
	}
	if cc.clips == nil {
		cc.clips = map[string]*transcode.Clip{}
	}
	cc.clips[path] = c
	return c, nil
}

// queueAudio is what the caller hears while waiting: the music, looped, or
// the ringback. A music file that does not load falls back to ringback
// (logged), so a bad file never costs the call.
func (c *call) queueAudio(q *config.Queue) func([]int16) {
	if q != nil && q.Music != "" {
		clip, err := c.g.clips.get(q.Music)
		if err == nil {
			return transcode.NewClipPlayer(clip, true).Fill
		}
		c.log.Error("queue music not playable; ringback instead", "file", q.Music, "err", err)
	}
	rb, err := transcode.NewRingback(queueRingback)
	if err != nil {
		return nil
	}
	return rb.Fill
}

// closing plays the queue's closing announcement to its end (bounded by the
// call's end and a minute).
func (c *call) closing(q *config.Queue) {
	if q == nil || q.Closing == "" {
		return
	}
	clip, err := c.g.clips.get(q.Closing)
	if err != nil {
		c.log.Error("closing announcement not playable", "file", q.Closing, "err", err)
		return
	}
	p := transcode.NewClipPlayer(clip, false)
	var mu sync.Mutex
	done := false
	if err := c.bridge.PlayToMeta(func(pcm []int16) {
		mu.Lock()
		defer mu.Unlock()
		p.Fill(pcm)
		done = p.Done()
	}); err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(c.ctx, min(clip.Duration()+time.Second, time.Minute))
	defer cancel()
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			mu.Lock()
			d := done
			mu.Unlock()
			if d {
				time.Sleep(100 * time.Millisecond) // the last frames leave the playout clock
				return
			}
		}
	}
}

// queuePlan splits the plan for queue mode: the targets that ring in turn,
// the default department tried once at the end, and the queue's deadline.
func (c *call) queuePlan(plan []attempt, q *config.Queue) (targets []attempt, dflt *attempt, deadline time.Time) {
	maxWait := 5 * time.Minute
	if q != nil && q.MaxWait > 0 {
		maxWait = q.MaxWait.D()
	}
	for i := range plan {
		if plan[i].kind == "default_department" {
			dflt = &plan[i]
			continue
		}
		targets = append(targets, plan[i])
	}
	return targets, dflt, time.Now().Add(maxWait)
}

// queueDescribe is the record's note on the wait: how long, how many rounds.
func queueDescribe(waited time.Duration, rounds int) string {
	return fmt.Sprintf("queued %s over %d round(s)", waited.Round(time.Second), rounds)
}
