package config

import (
	"errors"
	"os"
	"strings"
	"testing"
	"time"
)

func TestStoreAPIEventsKeys(t *testing.T) {
	base, err := os.ReadFile("example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	ok := func(extra string) *Config {
		t.Helper()
		c, err := Parse("x.yaml", append(append([]byte{}, base...), extra...), fullEnv)
		if err != nil {
			t.Fatalf("%q: %v", extra, err)
		}
		return c
	}
	// Defaults.
	c := ok("")
	if c.Events.Timeout.D() != 5*time.Second || c.Events.MaxBackoff.D() != 5*time.Minute || c.Events.MaxAge.D() != 24*time.Hour || c.API.Token != "" || c.Store.Timezone != "" {
		t.Fatalf("defaults: %+v %+v", c.Events, c.API)
	}
	c = ok("api: { token: 0123456789abcdef0123 }\nevents: { url: \"http://127.0.0.1:8080/ev\", secret: whsec-0123456789abcdef, max_backoff: 1m }\n")
	if c.API.Token != "0123456789abcdef0123" || c.Events.URL != "http://127.0.0.1:8080/ev" || c.Events.MaxBackoff.D() != time.Minute {
		t.Fatalf("parsed: %+v %+v", c.API, c.Events)
	}
	bad := []struct{ extra, want string }{
		{"api: { token: short }\n", "api.token: is shorter than 16"},
		{"events: { url: \"ftp://x\", secret: whsec-0123456789abcdef }\n", "events.url: \"ftp://x\" is not an http(s) URL"},
		{"events: { url: \"https://crm.example.com/e\" }\n", "events.secret: is required with events.url"},
		{"events: { timeout: 2m }\n", "events.timeout: 2m0s is outside 100ms..1m"},
		{"events: { max_backoff: 10m, max_age: 1m }\n", "events.max_age: 1m0s is shorter than events.max_backoff"},
		{"events: { retries: 3 }\n", "events.retries: unknown key"},
	}
	for _, tc := range bad {
		_, err := Parse("x.yaml", append(append([]byte{}, base...), tc.extra...), fullEnv)
		if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v; want %q", tc.extra, err, tc.want)
		}
	}
	// store.* problems: edit the example's one-line store section.
	for _, tc := range []struct{ store, want string }{
		{"store: { driver: sqlite, dsn: ./ponte.db, timezone: Mars/Olympus }", "store.timezone: \"Mars/Olympus\" is not an IANA time zone"},
		{"store: { driver: sqlite, dsn: \"./p.db?mode=ro\" }", "store.dsn: is a file path"},
		{"store: { driver: sqlite, dsn: ./ponte.db, timezone: America/Sao_Paulo }", ""},
	} {
		b := strings.Replace(string(base), "store: { driver: sqlite, dsn: ./ponte.db }", tc.store, 1)
		_, err := Parse("x.yaml", []byte(b), fullEnv)
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: %v; want %q", tc.store, err, tc.want)
		}
	}
}
