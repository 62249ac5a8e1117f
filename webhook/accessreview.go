package webhook

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/cutover-guard/cutover-guard/checks"
)

// AccessReviewer says whether a requester may get an object. The
// validator asks it before a denial or warning carries what the guard read
// from a Secret or ConfigMap.
type AccessReviewer interface {
	MayGet(ctx context.Context, user authenticationv1.UserInfo, obj checks.ObjectRef) (bool, error)
}

const (
	// DefaultRedactUnreadable is the default of --redact-unreadable: a
	// requester who may not get a Secret or ConfigMap reads a redacted
	// finding in place of what the guard read from it.
	DefaultRedactUnreadable = true
	// DefaultAccessReviewTTL is how long an answer of the API server to a
	// SubjectAccessReview is reused for the same user and object.
	DefaultAccessReviewTTL = 10 * time.Second
	// DefaultAccessReviewCacheSize bounds the answers kept: past it, the
	// oldest is forgotten first.
	DefaultAccessReviewCacheSize = 4096
)

// SubjectAccessReviewer asks the API server, with a SubjectAccessReview,
// whether a user may get an object, and remembers the answer for TTL.
// Concurrent identical questions share one review. Errors are not
// remembered.
type SubjectAccessReviewer struct {
	client client.Client
	ttl    time.Duration
	size   int
	now    func() time.Time

	mu      sync.Mutex
	answers map[[sha256.Size]byte]answer
	// order holds the keys in the order their answers expire (insertion
	// order, since the TTL is the same for all).
	order  [][sha256.Size]byte
	flight singleflight.Group
	// onMiss, if set, is called when no answer is kept, before the review
	// is sent or joined (for tests).
	onMiss func()
}

type answer struct {
	allowed bool
	expires time.Time
}

// NewSubjectAccessReviewer reviews through c (it needs
// create subjectaccessreviews.authorization.k8s.io). A ttl or size of 0 is
// its default.
func NewSubjectAccessReviewer(c client.Client, ttl time.Duration, size int) *SubjectAccessReviewer {
	if ttl <= 0 {
		ttl = DefaultAccessReviewTTL
	}
	if size <= 0 {
		size = DefaultAccessReviewCacheSize
	}
	return &SubjectAccessReviewer{client: c, ttl: ttl, size: size, now: time.Now, answers: map[[sha256.Size]byte]answer{}}
}

// MayGet reports whether user may get obj.
func (r *SubjectAccessReviewer) MayGet(ctx context.Context, user authenticationv1.UserInfo, obj checks.ObjectRef) (bool, error) {
	key := reviewKey(user, obj)
	if allowed, ok := r.remembered(key); ok {
		return allowed, nil
	}
	if r.onMiss != nil {
		r.onMiss()
	}
	v, err, _ := r.flight.Do(string(key[:]), func() (any, error) {
		// A review that ended between the look above and this one has
		// left its answer.
		if allowed, ok := r.remembered(key); ok {
			return allowed, nil
		}
		allowed, err := r.review(ctx, user, obj)
		if err != nil {
			return false, err
		}
		r.remember(key, allowed)
		return allowed, nil
	})
	if err != nil {
		return false, err
	}
	return v.(bool), nil
}

// remembered is the answer kept for key, if it has not expired.
func (r *SubjectAccessReviewer) remembered(key [sha256.Size]byte) (allowed, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	a, ok := r.answers[key]
	if !ok || !r.now().Before(a.expires) {
		return false, false
	}
	return a.allowed, true
}

// review sends one SubjectAccessReview.
func (r *SubjectAccessReviewer) review(ctx context.Context, user authenticationv1.UserInfo, obj checks.ObjectRef) (bool, error) {
	sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User:   user.Username,
		Groups: user.Groups,
		UID:    user.UID,
		ResourceAttributes: &authorizationv1.ResourceAttributes{
			Namespace: obj.Namespace, Verb: "get", Resource: obj.Resource, Name: obj.Name,
		},
	}}
	if len(user.Extra) > 0 {
		sar.Spec.Extra = make(map[string]authorizationv1.ExtraValue, len(user.Extra))
		for k, v := range user.Extra {
			sar.Spec.Extra[k] = authorizationv1.ExtraValue(v)
		}
	}
	if err := r.client.Create(ctx, sar); err != nil {
		return false, fmt.Errorf("asking the API server whether %s may get %s: %w", user.Username, obj, err)
	}
	return sar.Status.Allowed, nil
}

// remember keeps an answer, forgetting the expired ones and, past size,
// the oldest.
func (r *SubjectAccessReviewer) remember(key [sha256.Size]byte, allowed bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	for len(r.order) > 0 {
		oldest := r.order[0]
		a, ok := r.answers[oldest]
		if ok && now.Before(a.expires) && len(r.answers) < r.size {
			break
		}
		delete(r.answers, oldest)
		r.order = r.order[1:]
	}
	if _, ok := r.answers[key]; !ok {
		r.order = append(r.order, key)
	}
	r.answers[key] = answer{allowed: allowed, expires: now.Add(r.ttl)}
}

// reviewKey identifies a question: the whole identity the API server
// authorizes (user, UID, groups and extra, order aside) and the object.
// Each field is length-prefixed, so no two questions share a key.
func reviewKey(user authenticationv1.UserInfo, obj checks.ObjectRef) [sha256.Size]byte {
	h := sha256.New()
	put := func(s string) {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(s)))
		h.Write(n[:])
		h.Write([]byte(s))
	}
	put(user.Username)
	put(user.UID)
	groups := slices.Clone(user.Groups)
	sort.Strings(groups)
	put(fmt.Sprint(len(groups)))
	for _, g := range groups {
		put(g)
	}
	keys := make([]string, 0, len(user.Extra))
	for k := range user.Extra {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	put(fmt.Sprint(len(keys)))
	for _, k := range keys {
		put(k)
		vals := slices.Clone(user.Extra[k])
		sort.Strings(vals)
		put(fmt.Sprint(len(vals)))
		for _, v := range vals {
			put(v)
		}
	}
	put(obj.Resource)
	put(obj.Namespace)
	put(obj.Name)
	var k [sha256.Size]byte
	h.Sum(k[:0])
	return k
}
