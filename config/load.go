package config

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Error lists every problem found in a file, each with its line.
type Error struct {
	File     string
	Problems []string
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s: %d problem(s):\n  %s", e.File, len(e.Problems), strings.Join(e.Problems, "\n  "))
}

// Unwrap lets callers test errors.Is(err, ErrInvalid).
func (e *Error) Unwrap() error { return ErrInvalid }

// envRef matches ${NAME} and ${file:/path}: secrets stay out of the config
// file, in the environment or in a file of their own (a Docker or Kubernetes
// secret mounted read-only, a systemd LoadCredential).
var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*|file:[^}]+)\}`)

// readSecretFile reads a ${file:...} reference. One trailing newline (what
// `echo` and most editors add) is not part of the secret. The error names
// the path, never the content.
func readSecretFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	if len(b) > 64<<10 {
		return "", fmt.Errorf("%s: larger than 64 KiB, not a secret", path)
	}
	v := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
	if v == "" {
		return "", fmt.Errorf("%s: empty", path)
	}
	return v, nil
}

// Load reads, expands, decodes, defaults and validates a config file.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(path, b, os.LookupEnv)
}

// Parse is Load on bytes with an injectable environment.
func Parse(name string, b []byte, env func(string) (string, bool)) (*Config, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(b, &root); err != nil {
		return nil, &Error{File: name, Problems: []string{yamlMsg(err)}}
	}
	if len(root.Content) == 0 {
		return nil, &Error{File: name, Problems: []string{"the file is empty"}}
	}
	var probs []string
	expandNode(&root, env, "", &probs)
	if len(probs) > 0 {
		return nil, &Error{File: name, Problems: probs}
	}
	doc := root.Content[0]
	unknownKeys(doc, reflect.TypeOf(Config{}), "", &probs)
	var c Config
	if err := doc.Decode(&c); err != nil {
		probs = append(probs, yamlMsg(err))
	}
	if len(probs) > 0 {
		return nil, &Error{File: name, Problems: probs}
	}
	c.applyDefaults()
	for _, p := range c.validate() {
		line := lineOf(&root, p.path)
		if line > 0 {
			probs = append(probs, fmt.Sprintf("line %d: %s: %s", line, p.path, p.msg))
		} else {
			probs = append(probs, fmt.Sprintf("%s: %s", p.path, p.msg))
		}
	}
	if len(probs) > 0 {
		return nil, &Error{File: name, Problems: probs}
	}
	return &c, nil
}

// expandNode replaces ${NAME} in scalar values. A missing variable is an
// error naming the key, never a silent empty secret.
func expandNode(n *yaml.Node, env func(string) (string, bool), path string, probs *[]string) {
	switch n.Kind {
	case yaml.DocumentNode, yaml.SequenceNode:
		for i, c := range n.Content {
			p := path
			if n.Kind == yaml.SequenceNode {
				p = fmt.Sprintf("%s[%d]", path, i)
			}
			expandNode(c, env, p, probs)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i].Value
			p := k
			if path != "" {
				p = path + "." + k
			}
			expandNode(n.Content[i+1], env, p, probs)
		}
	case yaml.ScalarNode:
		if !strings.Contains(n.Value, "${") {
			return
		}
		n.Value = envRef.ReplaceAllStringFunc(n.Value, func(m string) string {
			name := m[2 : len(m)-1]
			if file, ok := strings.CutPrefix(name, "file:"); ok {
				v, err := readSecretFile(file)
				if err != nil {
					*probs = append(*probs, fmt.Sprintf("line %d: %s: secret file %v", n.Line, path, err))
				}
				return v
			}
			v, ok := env(name)
			if !ok {
				*probs = append(*probs, fmt.Sprintf("line %d: %s: environment variable %s is not set", n.Line, path, name))
			}
			return v
		})
		// A quoted-looking value stays a string after expansion.
		n.Style = yaml.DoubleQuotedStyle
		if _, err := strconv.ParseFloat(n.Value, 64); err != nil {
			n.Tag = "!!str"
		}
	}
}

// Finalize applies defaults and validates a Config built in code (tests, the
// demo). Errors carry key paths but no lines.
func (c *Config) Finalize() error {
	c.applyDefaults()
	var probs []string
	for _, p := range c.validate() {
		probs = append(probs, p.path+": "+p.msg)
	}
	if len(probs) > 0 {
		return &Error{File: "(config)", Problems: probs}
	}
	return nil
}

// lineOf finds the line of a dotted key path like sip.trunks[0].codecs[1].
func lineOf(root *yaml.Node, path string) int {
	n := root
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	line := 0
	for _, part := range splitPath(path) {
		if n == nil {
			return line
		}
		if idx, err := strconv.Atoi(part); err == nil && n.Kind == yaml.SequenceNode {
			if idx >= len(n.Content) {
				return line
			}
			n = n.Content[idx]
			line = n.Line
			continue
		}
		if n.Kind != yaml.MappingNode {
			return line
		}
		var next *yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == part {
				line = n.Content[i].Line
				next = n.Content[i+1]
				break
			}
		}
		n = next
	}
	return line
}

func splitPath(p string) []string {
	p = strings.ReplaceAll(p, "[", ".")
	p = strings.ReplaceAll(p, "]", "")
	return strings.Split(p, ".")
}

func yamlMsg(err error) string {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		return strings.Join(te.Errors, "; ")
	}
	return strings.TrimPrefix(err.Error(), "yaml: ")
}

// unknownKeys reports keys the schema does not have, with their line, so a
// misspelt "ring_timout" is an error and not a silently ignored default.
func unknownKeys(n *yaml.Node, t reflect.Type, path string, probs *[]string) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case n.Kind == yaml.MappingNode && t.Kind() == reflect.Struct:
		fields := map[string]reflect.Type{}
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			tag, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if tag != "" && tag != "-" {
				fields[tag] = f.Type
			}
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			p := join(path, k.Value)
			ft, ok := fields[k.Value]
			if !ok {
				*probs = append(*probs, fmt.Sprintf("line %d: %s: unknown key (misspelt, or not supported)", k.Line, p))
				continue
			}
			unknownKeys(n.Content[i+1], ft, p, probs)
		}
	case n.Kind == yaml.MappingNode && t.Kind() == reflect.Map:
		for i := 0; i+1 < len(n.Content); i += 2 {
			unknownKeys(n.Content[i+1], t.Elem(), join(path, n.Content[i].Value), probs)
		}
	case n.Kind == yaml.SequenceNode && t.Kind() == reflect.Slice:
		for i, c := range n.Content {
			unknownKeys(c, t.Elem(), fmt.Sprintf("%s[%d]", path, i), probs)
		}
	}
}

func join(path, k string) string {
	if path == "" {
		return k
	}
	return path + "." + k
}
