package test

import (
	"testing"

	"go.uber.org/goleak"
)

// Every test here starts the gateway, its legs and the simulators or real
// peers; once all are closed, no goroutine may be left behind.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
