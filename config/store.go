package config

import (
	"strings"
	"time"
)

// API configures the REST API on the admin listener (/api/...).
type API struct {
	// Token is the bearer token (RFC 6750) every /api request must carry.
	// Empty disables the API: every request gets 401.
	Token string `yaml:"token"`
}

// Events configures call event webhooks (call.offered, call.answered,
// call.transferred, call.ended) to the business.
type Events struct {
	URL    string `yaml:"url"`    // empty = no events
	Secret string `yaml:"secret"` // HMAC-SHA256 key for X-Ponte-Signature
	// Timeout bounds one POST (default 5s).
	Timeout Duration `yaml:"timeout"`
	// MaxBackoff caps the wait between retries (default 5m).
	MaxBackoff Duration `yaml:"max_backoff"`
	// MaxAge: an event still undelivered this long after it was written is
	// given up (default 24h), so one call's stuck event does not hold its
	// later ones forever.
	MaxAge Duration `yaml:"max_age"`
}

// minSecretLen: a bearer token or HMAC key shorter than this is guessable.
const minSecretLen = 16

func (c *Config) applyStoreDefaults() {
	if c.Events.Timeout == 0 {
		c.Events.Timeout = Duration(5 * time.Second)
	}
	if c.Events.MaxBackoff == 0 {
		c.Events.MaxBackoff = Duration(5 * time.Minute)
	}
	if c.Events.MaxAge == 0 {
		c.Events.MaxAge = Duration(24 * time.Hour)
	}
}

func (c *Config) validateStore() []problem {
	var ps []problem
	add := func(path, msg string) { ps = append(ps, problem{path, msg}) }
	if c.Store.Driver == "sqlite" && strings.TrimSpace(c.Store.DSN) == "" {
		add("store.dsn", "the sqlite driver needs a file path")
	}
	if strings.ContainsRune(c.Store.DSN, '?') {
		add("store.dsn", "is a file path; it may not contain '?' (ponte sets the SQLite options itself)")
	}
	if c.Store.Timezone != "" {
		if _, err := time.LoadLocation(c.Store.Timezone); err != nil {
			add("store.timezone", "\""+c.Store.Timezone+"\" is not an IANA time zone (e.g. America/Sao_Paulo)")
		}
	}
	if c.API.Token != "" && len(c.API.Token) < minSecretLen {
		add("api.token", "is shorter than 16 characters: use a random token (e.g. openssl rand -hex 32)")
	}
	e := &c.Events
	if e.URL != "" {
		if !strings.HasPrefix(e.URL, "https://") && !strings.HasPrefix(e.URL, "http://") {
			add("events.url", "\""+e.URL+"\" is not an http(s) URL")
		}
		if len(e.Secret) < minSecretLen {
			add("events.secret", "is required with events.url, at least 16 characters: receivers check X-Ponte-Signature with it")
		}
	}
	if e.Timeout.D() < 100*time.Millisecond || e.Timeout.D() > time.Minute {
		add("events.timeout", e.Timeout.D().String()+" is outside 100ms..1m")
	}
	if e.MaxBackoff.D() < time.Second {
		add("events.max_backoff", e.MaxBackoff.D().String()+" is under 1s")
	}
	if e.MaxAge.D() < e.MaxBackoff.D() {
		add("events.max_age", e.MaxAge.D().String()+" is shorter than events.max_backoff")
	}
	return ps
}
