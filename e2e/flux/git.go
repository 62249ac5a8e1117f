package flux

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/cgi"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Repo is a bare Git repository served over HTTP on loopback (Git's smart
// HTTP protocol, git-http-backend behind net/http/cgi), with a working
// clone the tests commit to and push from.
type Repo struct {
	// URL is what a GitRepository names: http://127.0.0.1:<port>/git/app.git.
	URL    string
	bare   string
	work   string
	server *http.Server
}

// Branch is the branch Repo commits to.
const Branch = "main"

// gitHTTPBackend finds Git's CGI program (Debian: /usr/lib/git-core).
func gitHTTPBackend() (string, error) {
	out, err := exec.Command("git", "--exec-path").Output()
	if err != nil {
		return "", fmt.Errorf("git --exec-path: %w (install git)", err)
	}
	p := filepath.Join(strings.TrimSpace(string(out)), "git-http-backend")
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("git-http-backend: %w", err)
	}
	return p, nil
}

// GitMissing says why Repo cannot run here, or "".
func GitMissing() string {
	if _, err := gitHTTPBackend(); err != nil {
		return err.Error()
	}
	return ""
}

// NewRepo makes an empty repository in dir and serves it.
func NewRepo(dir string) (*Repo, error) {
	backend, err := gitHTTPBackend()
	if err != nil {
		return nil, err
	}
	r := &Repo{bare: filepath.Join(dir, "git", "app.git"), work: filepath.Join(dir, "work")}
	if err := os.MkdirAll(filepath.Dir(r.bare), 0o700); err != nil {
		return nil, err
	}
	if _, err := r.git(dir, "init", "--quiet", "--bare", "--initial-branch="+Branch, r.bare); err != nil {
		return nil, err
	}
	if _, err := r.git(dir, "init", "--quiet", "--initial-branch="+Branch, r.work); err != nil {
		return nil, err
	}
	if _, err := r.git(r.work, "remote", "add", "origin", r.bare); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	h := &cgi.Handler{
		Path: backend,
		Root: "/git",
		Env:  []string{"GIT_PROJECT_ROOT=" + filepath.Dir(r.bare), "GIT_HTTP_EXPORT_ALL=1"},
	}
	mux := http.NewServeMux()
	mux.Handle("/git/", h)
	r.server = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = r.server.Serve(ln) }()
	r.URL = "http://" + ln.Addr().String() + "/git/app.git"
	return r, nil
}

// Close stops serving.
func (r *Repo) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return r.server.Shutdown(ctx)
}

// Commit replaces the working tree with files (path -> content), commits
// them with message and pushes; it returns the commit's SHA-1, as Flux
// names revisions ("main@sha1:<sha>").
func (r *Repo) Commit(files map[string][]byte, message string) (string, error) {
	entries, err := os.ReadDir(r.work)
	if err != nil {
		return "", err
	}
	for _, e := range entries {
		if e.Name() != ".git" {
			if err := os.RemoveAll(filepath.Join(r.work, e.Name())); err != nil {
				return "", err
			}
		}
	}
	for name, content := range files {
		p := filepath.Join(r.work, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return "", err
		}
		if err := os.WriteFile(p, content, 0o600); err != nil {
			return "", err
		}
	}
	if _, err := r.git(r.work, "add", "--all"); err != nil {
		return "", err
	}
	if _, err := r.git(r.work, "commit", "--quiet", "--allow-empty", "-m", message); err != nil {
		return "", err
	}
	if _, err := r.git(r.work, "push", "--quiet", "origin", Branch); err != nil {
		return "", err
	}
	sha, err := r.git(r.work, "rev-parse", "HEAD")
	return strings.TrimSpace(sha), err
}

// Revision is how Flux names commit sha on Branch.
func Revision(sha string) string { return Branch + "@sha1:" + sha }

func (r *Repo) git(dir string, args ...string) (string, error) {
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"GIT_AUTHOR_NAME=release engineer", "GIT_AUTHOR_EMAIL=release@example.invalid",
		"GIT_COMMITTER_NAME=release engineer", "GIT_COMMITTER_EMAIL=release@example.invalid",
		"GIT_CONFIG_NOSYSTEM=1", "HOME="+dir, "GIT_TERMINAL_PROMPT=0")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("git %s: %w: %s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out), nil
}
