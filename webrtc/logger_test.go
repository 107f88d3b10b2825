package webrtc

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

func TestPionBenignWarningsDemoted(t *testing.T) {
	var buf bytes.Buffer
	l := newPionLoggerFactory(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn}))).NewLogger("ice")
	l.Warn("Failed to ping without candidate pairs. Connection is not possible yet.")
	l.Warnf("Failed to read from candidate %s: %v", "udp4 host 127.0.0.1:1", "closed pipe")
	if buf.Len() != 0 {
		t.Fatalf("benign warnings logged at warn: %s", buf.String())
	}
	l.Warnf("DTLS handshake failed: %v", "bad certificate")
	if !strings.Contains(buf.String(), "level=WARN") || !strings.Contains(buf.String(), "bad certificate") {
		t.Fatalf("a real warning was lost: %q", buf.String())
	}
}
