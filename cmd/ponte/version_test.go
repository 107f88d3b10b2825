package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"runtime/debug"
	"strings"
	"testing"
)

func TestWriteVersion(t *testing.T) {
	bi := &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: "github.com/ponte-gw/ponte", Version: "(devel)"},
		Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "623c85a0"}, {Key: "vcs.time", Value: "2026-11-21T12:00:00Z"},
			{Key: "vcs.modified", Value: "true"}, {Key: "CGO_ENABLED", Value: "1"}, {Key: "-tags", Value: "nolibopusfile"}}}
	var b bytes.Buffer
	writeVersion(&b, "v0.3.0", "", bi)
	want := "ponte v0.3.0\ngo: go1.26.8\nmodule: github.com/ponte-gw/ponte (devel)\nrevision: 623c85a0\n" +
		"revision time: 2026-11-21T12:00:00Z\ndirty: true\nCGO_ENABLED: 1\n-tags: nolibopusfile\n"
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
	// A container build has no VCS settings: the -ldflags revision stands in.
	b.Reset()
	writeVersion(&b, "v0.3.0", "abc123", &debug.BuildInfo{GoVersion: "go1.26.8"})
	if !strings.Contains(b.String(), "revision: abc123\n") || strings.Contains(b.String(), "dirty") {
		t.Errorf("without VCS info:\n%s", b.String())
	}
}

func TestHealthcheck(t *testing.T) {
	status := http.StatusOK
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(status)
	}))
	defer srv.Close()
	if err := healthcheck([]string{"-url", srv.URL + "/healthz"}); err != nil {
		t.Errorf("healthy: %v", err)
	}
	status = http.StatusServiceUnavailable
	if err := healthcheck([]string{"-url", srv.URL + "/healthz"}); err == nil || !strings.Contains(err.Error(), "503") {
		t.Errorf("unhealthy: err %v, want a 503 error", err)
	}
	for in, want := range map[string]string{"0.0.0.0:9090": "127.0.0.1:9090", "[::]:9090": "127.0.0.1:9090",
		":9090": "127.0.0.1:9090", "10.0.0.5:9090": "10.0.0.5:9090"} {
		if got := loopbackFor(in); got != want {
			t.Errorf("loopbackFor(%q) = %q, want %q", in, got, want)
		}
	}
}
