// Package deps pins the project's direct dependencies while the packages
// that use them are being written. It is removed once every one is imported.
package deps

import (
	_ "github.com/emiago/sipgo"
	_ "github.com/hraban/opus"
	_ "github.com/pion/interceptor"
	_ "github.com/pion/rtcp"
	_ "github.com/pion/rtp"
	_ "github.com/pion/sdp/v3"
	_ "github.com/pion/webrtc/v4"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "go.uber.org/goleak"
	_ "gopkg.in/yaml.v3"
	_ "modernc.org/sqlite"
)
