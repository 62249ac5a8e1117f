package cutoverctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

// Defaults of the post-cutover validation: the tutorial's five requests two
// seconds apart, each of which must answer 200.
const (
	DefaultVerifyCount    = 5
	DefaultVerifyInterval = 2 * time.Second
	// DefaultVerifyTimeout bounds each request.
	DefaultVerifyTimeout = 10 * time.Second
)

// maxVerifyBody bounds what is read of a response, so a verify URL that
// streams forever cannot hold the plugin.
const maxVerifyBody = 1 << 20

// VerifyResult is the post-cutover validation's outcome.
type VerifyResult struct {
	URL      string          `json:"url"`
	OK       bool            `json:"ok"`
	Requests []VerifyRequest `json:"requests"`
}

// VerifyRequest is one request of the validation.
type VerifyRequest struct {
	N      int    `json:"n"`
	Status int    `json:"status,omitempty"`
	Error  string `json:"error,omitempty"`
}

// failed is the failed request, if one failed.
func (r *VerifyResult) failed() *VerifyRequest {
	if r == nil || r.OK || len(r.Requests) == 0 {
		return nil
	}
	return &r.Requests[len(r.Requests)-1]
}

func (q VerifyRequest) String() string {
	if q.Error != "" {
		return q.Error
	}
	return fmt.Sprintf("HTTP %d", q.Status)
}

// verifyOptions are --verify and its companions.
type verifyOptions struct {
	url      string
	count    int
	interval time.Duration
	timeout  time.Duration
}

func (o verifyOptions) validate() error {
	if o.url == "" {
		return nil
	}
	u, err := url.Parse(o.url)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("--verify %q: want an http:// or https:// URL of the Gateway, e.g. --verify http://203.0.113.7/", o.url)
	}
	if o.count < 1 {
		return fmt.Errorf("--verify-count %d: want at least 1", o.count)
	}
	if o.interval < 0 || o.timeout <= 0 {
		return errors.New("--verify-interval must not be negative and --verify-timeout must be positive")
	}
	return nil
}

// verify sends o.count GETs to o.url, o.interval apart, and stops at the
// first that does not answer 200 (redirects are not followed, as curl does
// not follow them). progress is called after each request.
func verify(ctx context.Context, o verifyOptions, progress func(VerifyRequest)) *VerifyResult {
	client := &http.Client{
		Timeout:       o.timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	res := &VerifyResult{URL: o.url, Requests: []VerifyRequest{}}
	for i := 1; i <= o.count; i++ {
		if i > 1 {
			t := time.NewTimer(o.interval)
			select {
			case <-ctx.Done():
				t.Stop()
				res.Requests = append(res.Requests, VerifyRequest{N: i, Error: "interrupted: " + ctx.Err().Error()})
				return res
			case <-t.C:
			}
		}
		q := VerifyRequest{N: i}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, o.url, nil)
		if err == nil {
			var resp *http.Response
			if resp, err = client.Do(req); err == nil {
				_, _ = io.CopyN(io.Discard, resp.Body, maxVerifyBody)
				_ = resp.Body.Close()
				q.Status = resp.StatusCode
			}
		}
		if err != nil {
			q.Error = err.Error()
		}
		res.Requests = append(res.Requests, q)
		if progress != nil {
			progress(q)
		}
		if q.Error != "" || q.Status != http.StatusOK {
			return res
		}
	}
	res.OK = true
	return res
}
