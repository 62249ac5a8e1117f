package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	"github.com/prometheus/client_golang/prometheus"
	admissionv1 "k8s.io/api/admission/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/cutover-guard/cutover-guard/checks"
)

// accessFunc is an AccessReviewer that answers as the function does.
type accessFunc func(user authenticationv1.UserInfo, obj checks.ObjectRef) (bool, error)

func (f accessFunc) MayGet(_ context.Context, user authenticationv1.UserInfo, obj checks.ObjectRef) (bool, error) {
	return f(user, obj)
}

var appDB = checks.ObjectRef{Resource: "secrets", Namespace: "production", Name: "app-db"}

// What the guard read from Secret app-db, which the denial must not carry
// to whoever may not read it.
var secretWords = []string{"db-secret-host.example.test", "6543", "shopuser", "shopdb"}

// revealingFindings are a denial whose words come from Secret app-db, one
// that reveals nothing, and a warning from the same Secret.
func revealingFindings() []checks.Finding {
	svc := types.NamespacedName{Namespace: "production", Name: "app-green"}
	return []checks.Finding{
		{Check: checks.CheckDeployment, Severity: checks.Deny, Service: svc, Object: "deployment app-green", Reason: "DeploymentNotReady",
			Message: "deployment app-green is not ready (0/2 ready)", Fix: "wait for: kubectl rollout status deployment/app-green -n production"},
		{Check: checks.CheckDatabase, Severity: checks.Deny, Service: svc, Object: "secret app-db", Reason: checks.ReasonDatabaseAuthFailed,
			Message: "database at db-secret-host.example.test:6543 rejected the password for user shopuser",
			Fix:     "check the user and database shopdb in secret production/app-db key url",
			Reveals: []checks.ObjectRef{appDB}, Source: "secret production/app-db key url"},
		{Check: checks.CheckDatabase, Severity: checks.Warn, Service: svc, Object: "secret app-db", Reason: checks.ReasonDatabaseNoUser,
			Message: "database url names no user; only checked that db-secret-host.example.test:6543 accepts connections",
			Reveals: []checks.ObjectRef{appDB}, Source: "secret production/app-db key url"},
	}
}

// The requester reads a finding in full only if they may get every Secret
// it reveals; the Event is redacted for all; the verdict is the same for
// all; the log keeps the full text.
func TestRequesterReadsOnlyWhatTheyMayGet(t *testing.T) {
	owners := accessFunc(func(user authenticationv1.UserInfo, obj checks.ObjectRef) (bool, error) {
		if obj != appDB {
			return false, fmt.Errorf("asked about %s", obj)
		}
		for _, g := range user.Groups {
			if g == "db-owners" {
				return true, nil
			}
		}
		return false, nil
	})
	broken := accessFunc(func(authenticationv1.UserInfo, checks.ObjectRef) (bool, error) {
		return false, errors.New("the server is currently unable to handle the request")
	})
	tests := map[string]struct {
		access   AccessReviewer
		user     authenticationv1.UserInfo
		override bool
		wantFull bool
	}{
		"a user who may read the Secret reads it all":                 {access: owners, user: authenticationv1.UserInfo{Username: "olga", Groups: []string{"db-owners"}}, wantFull: true},
		"a user who may not reads which check failed and whom to ask": {access: owners, user: authenticationv1.UserInfo{Username: "tenant", Groups: []string{"devs"}}},
		"a review that fails redacts":                                 {access: broken, user: authenticationv1.UserInfo{Username: "olga", Groups: []string{"db-owners"}}},
		"with redaction off every requester reads it all":             {access: nil, user: authenticationv1.UserInfo{Username: "tenant"}, wantFull: true},
		"an override shows the denials it overrode as the requester may read them": {
			access: owners, user: authenticationv1.UserInfo{Username: "alice", Groups: []string{"sre"}}, override: true,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			guard := evaluatorFunc(func(context.Context, []checks.Target) (checks.Result, error) {
				return checks.Result{Findings: revealingFindings()}, nil
			})
			recorder := events.NewFakeRecorder(4)
			v := &Validator[*gwv1.HTTPRoute]{Kind: KindHTTPRoute, Reduce: HTTPRouteOf, Guard: guard, Recorder: recorder,
				Metrics: NewMetrics(prometheus.NewRegistry()), OverrideGroups: []string{"sre"}, Access: tc.access}
			var logs []string
			var mu sync.Mutex
			logger := funcr.NewJSON(func(obj string) {
				mu.Lock()
				defer mu.Unlock()
				logs = append(logs, obj)
			}, funcr.Options{})
			req := admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
				Operation: admissionv1.Update, DryRun: ptr.To(false), UserInfo: tc.user}}
			ctx := admission.NewContextWithRequest(logf.IntoContext(withAudit(t.Context(), &audit{}), logger), req)
			var reason *string
			if tc.override {
				reason = str(reasonINC)
			}

			d := v.judge(ctx, tutorialRoute("app-blue", nil, nil), tutorialRoute("app-green", reason, nil))
			v.publisher().publish(ctx, d)
			warnings, err := d.response()
			close(recorder.Events)
			var evs []string
			for e := range recorder.Events {
				evs = append(evs, e)
			}

			wantResult := ResultDenied
			if tc.override {
				wantResult = ResultOverridden
			}
			if d.Result != wantResult {
				t.Fatalf("result %s, want %s: what the requester may read must not change the verdict", d.Result, wantResult)
			}
			shown := strings.Join(warnings, "\n")
			if err != nil {
				shown += "\n" + err.Error()
			}
			if !strings.Contains(shown, "deployment app-green is not ready (0/2 ready)") {
				t.Errorf("a finding that reveals nothing is shown in full to all, got:\n%s", shown)
			}
			for _, w := range secretWords {
				if got := strings.Contains(shown, w); got != tc.wantFull {
					t.Errorf("response shows %q: %v, want %v:\n%s", w, got, tc.wantFull, shown)
				}
			}
			if !tc.wantFull {
				want := []string{"database check failed (DatabaseAuthFailed) for the connection string in sec"}
				if !tc.override { // warnings are cut at 120 characters; a denial is not
					want = append(want, "database check failed (DatabaseAuthFailed) for the connection string in secret production/app-db key url; you may not read secret production/app-db: ask its owner, or see the guard's log")
				}
				for _, want := range want {
					if !strings.Contains(shown, want) {
						t.Errorf("response does not say %q:\n%s", want, shown)
					}
				}
			}
			if len(evs) != 1 {
				t.Fatalf("events %q, want one", evs)
			}
			for _, w := range secretWords {
				if strings.Contains(evs[0], w) {
					t.Errorf("the Event, which the view role reads, shows %q: %s", w, evs[0])
				}
			}
			if !strings.Contains(evs[0], "you may not read secret production/app-db") || !strings.Contains(evs[0], "deployment app-green is not ready") {
				t.Errorf("Event note does not carry the redacted denials: %s", evs[0])
			}
			var line map[string]any
			if len(logs) == 0 || json.Unmarshal([]byte(logs[len(logs)-1]), &line) != nil {
				t.Fatalf("no decision log line: %q", logs)
			}
			withheld := fmt.Sprint(line["withheld"])
			for _, w := range secretWords {
				if !strings.Contains(withheld, w) {
					t.Errorf("the log line's withheld %q lacks %q: the platform team needs the detail", withheld, w)
				}
			}
		})
	}
}

// sarClient is a fake API server that answers SubjectAccessReviews:
// allowed for users in allow, an error for user "broken"; each review
// waits for release, if set.
func sarClient(t *testing.T, allow map[string]bool, release chan struct{}) (client.Client, *atomic.Int32) {
	t.Helper()
	var n atomic.Int32
	c := fake.NewClientBuilder().WithScheme(Scheme()).WithInterceptorFuncs(interceptor.Funcs{
		Create: func(ctx context.Context, _ client.WithWatch, obj client.Object, _ ...client.CreateOption) error {
			sar, ok := obj.(*authorizationv1.SubjectAccessReview)
			if !ok {
				return fmt.Errorf("created %T", obj)
			}
			n.Add(1)
			if release != nil {
				select {
				case <-release:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			ra := sar.Spec.ResourceAttributes
			if ra == nil || ra.Verb != "get" || ra.Resource == "" || ra.Name == "" || ra.Namespace == "" {
				return fmt.Errorf("review of %+v", ra)
			}
			if sar.Spec.User == "broken" {
				return errors.New("the server is currently unable to handle the request")
			}
			sar.Status.Allowed = allow[sar.Spec.User+"/"+ra.Resource+"/"+ra.Name]
			return nil
		},
	}).Build()
	return c, &n
}

func TestSubjectAccessReviewerAnswersAndRemembers(t *testing.T) {
	c, reviews := sarClient(t, map[string]bool{"olga/secrets/app-db": true}, nil)
	now := time.Unix(1_000_000, 0)
	r := NewSubjectAccessReviewer(c, 10*time.Second, 3)
	r.now = func() time.Time { return now }
	ctx := t.Context()
	olga := authenticationv1.UserInfo{Username: "olga", Groups: []string{"a", "b"}}
	tenant := authenticationv1.UserInfo{Username: "tenant"}
	ask := func(u authenticationv1.UserInfo, o checks.ObjectRef) bool {
		t.Helper()
		ok, err := r.MayGet(ctx, u, o)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}

	if !ask(olga, appDB) || ask(tenant, appDB) {
		t.Fatal("answers are not the API server's")
	}
	if got := reviews.Load(); got != 2 {
		t.Fatalf("reviews = %d, want 2", got)
	}
	// The same question, groups in another order: remembered.
	if !ask(authenticationv1.UserInfo{Username: "olga", Groups: []string{"b", "a"}}, appDB) || ask(tenant, appDB) {
		t.Fatal("remembered answers changed")
	}
	if got := reviews.Load(); got != 2 {
		t.Errorf("reviews after asking again = %d, want 2 (remembered)", got)
	}
	// Another group is another identity: asked.
	ask(authenticationv1.UserInfo{Username: "olga", Groups: []string{"a"}}, appDB)
	if got := reviews.Load(); got != 3 {
		t.Errorf("reviews after another group = %d, want 3", got)
	}
	// Past the TTL, asked again.
	now = now.Add(10 * time.Second)
	ask(olga, appDB)
	if got := reviews.Load(); got != 4 {
		t.Errorf("reviews after the TTL = %d, want 4", got)
	}
	// Bounded: never more than size answers kept.
	for i := range 10 {
		ask(tenant, checks.ObjectRef{Resource: "secrets", Namespace: "production", Name: fmt.Sprint("s", i)})
	}
	r.mu.Lock()
	kept, order := len(r.answers), len(r.order)
	r.mu.Unlock()
	if kept > 3 || order != kept {
		t.Errorf("answers kept = %d (order %d), want at most 3", kept, order)
	}
	// An error is not remembered.
	broken := authenticationv1.UserInfo{Username: "broken"}
	for range 2 {
		if ok, err := r.MayGet(ctx, broken, appDB); err == nil || ok {
			t.Errorf("MayGet for a failing review = %v, %v, want an error", ok, err)
		}
	}
	if got := reviews.Load(); got != 4+10+2 {
		t.Errorf("reviews = %d, want %d (errors asked again)", got, 4+10+2)
	}
}

// Identical questions asked while one review is in flight share it.
func TestSubjectAccessReviewerSharesConcurrentReviews(t *testing.T) {
	release := make(chan struct{})
	c, reviews := sarClient(t, map[string]bool{"olga/secrets/app-db": true}, release)
	r := NewSubjectAccessReviewer(c, 0, 0)
	const callers = 8
	var missed atomic.Int32
	r.onMiss = func() { missed.Add(1) }
	olga := authenticationv1.UserInfo{Username: "olga"}
	var wg sync.WaitGroup
	results := make([]bool, callers)
	for i := range callers {
		wg.Go(func() {
			ok, err := r.MayGet(t.Context(), olga, appDB)
			if err != nil {
				t.Error(err)
			}
			results[i] = ok
		})
	}
	deadline := time.Now().Add(10 * time.Second)
	for missed.Load() < callers {
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d callers asked", missed.Load(), callers)
		}
		time.Sleep(time.Millisecond)
	}
	close(release)
	wg.Wait()
	if got := reviews.Load(); got != 1 {
		t.Errorf("reviews = %d, want 1 shared by %d callers", got, callers)
	}
	for i, ok := range results {
		if !ok {
			t.Errorf("caller %d was not allowed", i)
		}
	}
}
