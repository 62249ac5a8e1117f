package tutorial

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Kubectl runs the real kubectl binary against one cluster.
type Kubectl struct {
	// Binary is the kubectl executable.
	Binary string
	// Kubeconfig is the cluster's kubeconfig; it is passed as $KUBECONFIG.
	Kubeconfig string
	// Dir is the working directory of every command (e.g. where the
	// manifests are); empty means the current one.
	Dir string
	// Home holds kubectl's discovery cache and temporary files (kubectl edit
	// writes there), so nothing lands in the user's home; required.
	Home string
	// Env is added to every command's environment.
	Env []string
	// Transcript, if set, records every command and its output.
	Transcript *Transcript
}

// Result is one finished kubectl command.
type Result struct {
	// Command is the command as a shell would run it.
	Command string
	// Stdout is what the command wrote to stdout.
	Stdout string
	// Output is stdout and stderr interleaved as written.
	Output string
	// ExitCode is the exit status; -1 if the command did not run to an exit.
	ExitCode int
	// Err is set when the command could not be run or did not exit 0.
	Err error
	// Took is the command's wall time.
	Took time.Duration
}

// OK reports whether the command exited 0.
func (r *Result) OK() bool { return r.ExitCode == 0 && r.Err == nil }

// Denied reports whether the command failed because an admission webhook
// denied the request.
func (r *Result) Denied() bool {
	return r.ExitCode > 0 && strings.Contains(r.Output, "denied the request")
}

// String renders the command and its output for a failure message.
func (r *Result) String() string {
	return fmt.Sprintf("$ %s\n%s(exit %d after %s)", r.Command, r.Output, r.ExitCode, r.Took.Round(time.Millisecond))
}

// Run runs kubectl with args, without a shell.
func (k *Kubectl) Run(ctx context.Context, args ...string) *Result {
	cmd := exec.CommandContext(ctx, k.Binary, args...)
	return k.run(cmd, "kubectl "+shellJoin(args))
}

// Shell runs a command line with sh, as a reader of the tutorial would type
// it: "kubectl" resolves to Binary, the line is recorded exactly as given,
// and env is added to the environment (e.g. a variable the line refers to).
func (k *Kubectl) Shell(ctx context.Context, line string, env ...string) *Result {
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", line)
	cmd.Env = env
	return k.run(cmd, line)
}

func (k *Kubectl) run(cmd *exec.Cmd, command string) *Result {
	extra := cmd.Env
	cmd.Env = k.environ(extra)
	cmd.Dir = k.Dir
	cmd.WaitDelay = 5 * time.Second
	var stdout, output syncBuffer
	cmd.Stdout = io.MultiWriter(&stdout, &output)
	cmd.Stderr = &output
	start := time.Now()
	err := cmd.Run()
	r := &Result{Command: command, Stdout: stdout.String(), Output: output.String(), Took: time.Since(start), Err: err}
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		r.ExitCode = exit.ExitCode()
	default:
		r.ExitCode = -1
	}
	if k.Transcript != nil {
		k.Transcript.add(r)
	}
	return r
}

// environ is the process environment with the cluster's kubeconfig, a
// private cache and temp folder, kubectl's folder first in $PATH, and extra.
func (k *Kubectl) environ(extra []string) []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		switch name {
		case "KUBECONFIG", "KUBECACHEDIR", "TMPDIR", "PATH", "KUBE_EDITOR", "EDITOR", "KUBECTL_EXTERNAL_DIFF":
			continue
		}
		env = append(env, kv)
	}
	env = append(env,
		"KUBECONFIG="+k.Kubeconfig,
		"KUBECACHEDIR="+filepath.Join(k.Home, "cache"),
		"TMPDIR="+k.tmpDir(),
		"PATH="+filepath.Dir(k.Binary)+string(os.PathListSeparator)+os.Getenv("PATH"),
	)
	env = append(env, k.Env...)
	return append(env, extra...)
}

func (k *Kubectl) tmpDir() string {
	d := filepath.Join(k.Home, "tmp")
	_ = os.MkdirAll(d, 0o700)
	return d
}

// shellJoin quotes args for sh where needed.
func shellJoin(args []string) string {
	quoted := make([]string, len(args))
	for i, a := range args {
		quoted[i] = shellQuote(a)
	}
	return strings.Join(quoted, " ")
}

func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		safe := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./=:,@%+", r)
		return !safe
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// Transcript records commands and their output; it is safe for concurrent use.
type Transcript struct {
	mu   sync.Mutex
	runs []*Result
}

func (t *Transcript) add(r *Result) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.runs = append(t.runs, r)
}

// Runs returns the recorded commands.
func (t *Transcript) Runs() []*Result {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]*Result(nil), t.runs...)
}

// syncBuffer is a bytes.Buffer that two writers may share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
