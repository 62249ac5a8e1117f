package checks

import (
	"context"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/cutover-guard/cutover-guard/checks/probe"
)

// objectKey names a Secret ("secret") or ConfigMap ("configmap") of the
// target's namespace.
type objectKey struct{ kind, name string }

// fetched is the keys of one Secret or ConfigMap that the decision may
// use, or why it could not be read. Every other key is dropped right after
// the GET, and a value longer than maxDSNLen is kept only as its first
// maxDSNLen+1 bytes: it can only make a connection string too long, which
// is a finding of its own.
type fetched struct {
	data     map[string]string
	notFound bool
	err      error
}

// envResolver resolves environment variables of a Deployment's containers as
// the kubelet would, reading each Secret and ConfigMap at most once.
type envResolver struct {
	ctx     context.Context
	r       client.Reader
	svc     types.NamespacedName
	objects map[objectKey]fetched
	// wanted are, per object, the keys a lookup may ask for (see
	// wantedKeys); only they are kept.
	wanted   map[objectKey]map[string]bool
	findings []Finding
	reported map[string]bool
	// containers memoizes each container's environment.
	containers map[*corev1.Container]*containerEnv
	// expanded counts the bytes literal values expanded to, against
	// maxExpandedEnvTotal.
	expanded int
	// err is the first read that failed other than NotFound: the check
	// cannot decide, and ends with it.
	err error
}

// maxExpandedEnvLen bounds the value one env entry expands to. A
// connection string is far shorter; a value past it is a Deny finding, so
// that chained references ($(V1)$(V1) in V2, and so on) cannot make the
// guard build gigabytes.
const maxExpandedEnvLen = 32 << 10

// maxExpandedEnvTotal bounds the bytes all the variables one database check
// needs expand to together, so that many variables each under
// maxExpandedEnvLen cannot add up to a flood either.
const maxExpandedEnvTotal = 1 << 20

// ReasonDatabaseEnvTooLong marks an env var a connection string is built
// from whose expansion exceeds the guard's limit.
const ReasonDatabaseEnvTooLong Reason = "DatabaseEnvTooLong"

// containerEnv is one container's environment as the kubelet builds it:
// envFrom sources first (a later source overriding an earlier one), then env
// in order, each entry expanded once against the entries before it. Entries
// are evaluated lazily, only those a wanted variable depends on, and kept.
type containerEnv struct {
	dep *Workload
	c   *corev1.Container
	// byName lists, per name, the indices of the env entries that set it,
	// ascending.
	byName map[string][]int
	vals   map[int]envValue
	// fromEnvFrom memoizes lookups in envFrom, by name.
	fromEnvFrom map[string]envValue
}

// envValue is one resolved variable. ok is false if it is unset, optional
// and missing, comes from a field reference, or its source is broken.
// tooLong names the variable whose expansion went past maxExpandedEnvLen
// (this one or one it refers to), or past maxExpandedEnvTotal if
// overBudget; the value is then empty.
type envValue struct {
	v          string
	src        dsnSource
	ok         bool
	tooLong    string
	overBudget bool
}

func (e *envResolver) containerEnv(dep *Workload, c *corev1.Container) *containerEnv {
	if ce, ok := e.containers[c]; ok {
		return ce
	}
	ce := &containerEnv{dep: dep, c: c, byName: map[string][]int{}, vals: map[int]envValue{}, fromEnvFrom: map[string]envValue{}}
	for i := range c.Env {
		ce.byName[c.Env[i].Name] = append(ce.byName[c.Env[i].Name], i)
	}
	e.containers[c] = ce
	return ce
}

// before is the index of the last env entry before index upTo that sets
// name, or -1 if none does (the name then comes from envFrom, if anywhere).
func (ce *containerEnv) before(name string, upTo int) int {
	idx := ce.byName[name]
	n, _ := slices.BinarySearch(idx, upTo) // idx[n-1] < upTo <= idx[n]
	if n == 0 {
		return -1
	}
	return idx[n-1]
}

// value resolves variable name as the container sees it after its whole
// env list. A source that could not be read sets e.err; ctx ending does too.
func (e *envResolver) value(dep *Workload, c *corev1.Container, name string) envValue {
	ce := e.containerEnv(dep, c)
	j := ce.before(name, len(c.Env))
	if j < 0 {
		return e.envFromValue(ce, name)
	}
	if v, done := ce.vals[j]; done {
		return v
	}
	// Find the entries j depends on, without recursion: each is visited
	// once, and every reference points to an earlier entry.
	needed := []int{j}
	seen := map[int]bool{j: true}
	for k := 0; k < len(needed); k++ {
		i := needed[k]
		ev := &c.Env[i]
		if ev.ValueFrom != nil || !strings.Contains(ev.Value, "$") {
			continue
		}
		for _, ref := range envRefs(ev.Value) {
			if m := ce.before(ref, i); m >= 0 && !seen[m] {
				if _, done := ce.vals[m]; !done {
					seen[m] = true
					needed = append(needed, m)
				}
			}
		}
	}
	slices.Sort(needed)
	for _, i := range needed {
		if e.err == nil {
			e.err = e.ctx.Err() // nothing runs on past the deadline
		}
		if e.err != nil {
			return envValue{}
		}
		ce.vals[i] = e.entry(ce, i)
	}
	return ce.vals[j]
}

// entry evaluates env entry i of ce, whose dependencies are evaluated.
func (e *envResolver) entry(ce *containerEnv, i int) envValue {
	dep, c, ev := ce.dep, ce.c, &ce.c.Env[i]
	name := ev.Name
	user := fmt.Sprintf("env %s of container %s in %s", probe.Printable(name), c.Name, dep.Ref())
	switch {
	case ev.ValueFrom == nil:
		src := dsnSource{kind: "env", namespace: dep.Object.GetNamespace(), envName: name, container: c.Name, deployment: dep.Name(), workloadKind: dep.Kind}
		lookup := func(ref string) envValue {
			if m := ce.before(ref, i); m >= 0 {
				return ce.vals[m]
			}
			return e.envFromValue(ce, ref)
		}
		// A variable built from one past a limit is past it too, for the
		// same cause: name that one.
		for _, ref := range envRefs(ev.Value) {
			if rv := lookup(ref); rv.tooLong != "" {
				return envValue{src: src, tooLong: rv.tooLong, overBudget: rv.overBudget}
			}
		}
		tooLong, overBudget := "", false
		seenRef := map[string]bool{}
		limit := min(maxExpandedEnvLen, maxExpandedEnvTotal-e.expanded)
		v, fits := expandEnv(ev.Value, limit, func(ref string) (string, bool) {
			rv := lookup(ref)
			if rv.ok && !seenRef[ref] {
				seenRef[ref] = true
				src.refs = append(src.refs, "$("+probe.Printable(ref)+") from "+rv.src.base())
				src.addRefObjects(rv.src.revealed())
			}
			return rv.v, rv.ok
		})
		if !fits && tooLong == "" {
			tooLong, overBudget = name, limit < maxExpandedEnvLen
		}
		if tooLong != "" {
			return envValue{src: src, tooLong: tooLong, overBudget: overBudget}
		}
		e.expanded += len(v)
		return envValue{v: v, src: src, ok: true}
	case ev.ValueFrom.SecretKeyRef != nil:
		ref := ev.ValueFrom.SecretKeyRef
		v, ok := e.key("secret", ref.Name, ref.Key, ref.Optional != nil && *ref.Optional, user, dep.Ref())
		return envValue{v: v, ok: ok, src: dsnSource{kind: "secret", namespace: dep.Object.GetNamespace(), name: ref.Name, key: ref.Key, envName: name, container: c.Name, deployment: dep.Name(), workloadKind: dep.Kind}}
	case ev.ValueFrom.ConfigMapKeyRef != nil:
		ref := ev.ValueFrom.ConfigMapKeyRef
		v, ok := e.key("configmap", ref.Name, ref.Key, ref.Optional != nil && *ref.Optional, user, dep.Ref())
		return envValue{v: v, ok: ok, src: dsnSource{kind: "configmap", namespace: dep.Object.GetNamespace(), name: ref.Name, key: ref.Key, envName: name, container: c.Name, deployment: dep.Name(), workloadKind: dep.Kind}}
	default:
		return envValue{}
	}
}

// envFromValue looks name up in ce's envFrom sources, the last one that
// holds it winning, as the kubelet does. Values from envFrom are not
// expanded.
func (e *envResolver) envFromValue(ce *containerEnv, name string) envValue {
	if v, done := ce.fromEnvFrom[name]; done {
		return v
	}
	dep, c := ce.dep, ce.c
	var out envValue
	for j := len(c.EnvFrom) - 1; j >= 0; j-- {
		ef := &c.EnvFrom[j]
		key, ok := strings.CutPrefix(name, ef.Prefix)
		if !ok {
			continue
		}
		user := fmt.Sprintf("envFrom of container %s in %s", c.Name, dep.Ref())
		var kind, objName string
		var optional bool
		switch {
		case ef.SecretRef != nil:
			kind, objName, optional = "secret", ef.SecretRef.Name, ef.SecretRef.Optional != nil && *ef.SecretRef.Optional
		case ef.ConfigMapRef != nil:
			kind, objName, optional = "configmap", ef.ConfigMapRef.Name, ef.ConfigMapRef.Optional != nil && *ef.ConfigMapRef.Optional
		default:
			continue
		}
		data, ok := e.object(kind, objName, key, optional, user, dep.Ref())
		if !ok {
			continue
		}
		if v, ok := data[key]; ok {
			out = envValue{v: v, ok: true, src: dsnSource{kind: kind, namespace: dep.Object.GetNamespace(), name: objName, key: key, envName: name, container: c.Name, deployment: dep.Name(), workloadKind: dep.Kind}}
			break
		}
	}
	if e.err == nil {
		ce.fromEnvFrom[name] = out
	}
	return out
}

// tooLong reports that env var name of container c, wanted as a connection
// string, is built from v.tooLong, whose expansion exceeds a limit.
func (e *envResolver) tooLong(dep *Workload, c *corev1.Container, name string, v envValue) {
	culprit := v.tooLong
	msg := fmt.Sprintf("env %s of container %s in %s expands to more than %d bytes", probe.Printable(culprit), c.Name, dep.Ref(), maxExpandedEnvLen)
	if v.overBudget {
		msg = fmt.Sprintf("env %s of container %s in %s expands past %d bytes with the variables expanded before it", probe.Printable(culprit), c.Name, dep.Ref(), maxExpandedEnvTotal)
	}
	if culprit != name {
		msg += fmt.Sprintf(" (used by %s)", probe.Printable(name))
	}
	e.add(Finding{
		Check: CheckDatabase, Severity: Deny, Service: e.svc, Object: dep.Ref(),
		Reason: ReasonDatabaseEnvTooLong, Message: msg,
		Fix: fmt.Sprintf("shorten env %s or the $(VAR) references it expands in %s: a connection string needs far less than %d KiB",
			probe.Printable(culprit), dep.Ref(), maxExpandedEnvLen>>10),
	})
}

// key returns one key of a Secret or ConfigMap, reporting a missing object or
// key unless optional.
func (e *envResolver) key(kind, name, key string, optional bool, user, deployment string) (string, bool) {
	data, ok := e.object(kind, name, key, optional, user, deployment)
	if !ok {
		return "", false
	}
	v, ok := data[key]
	if !ok && !optional {
		e.report(kind, name, fmt.Sprintf("%s %s/%s has no key %s (used by %s)", kind, e.svc.Namespace, name, key, user),
			fmt.Sprintf("add key %s to %s %s, or fix the key in %s", key, kind, name, deployment))
	}
	return v, ok
}

// object GETs a Secret's or ConfigMap's data once per DatabaseReachable call.
// key is the key wanted, for the fix of a missing object.
func (e *envResolver) object(kind, name, key string, optional bool, user, deployment string) (map[string]string, bool) {
	if e.err != nil {
		return nil, false // the check ends with the error: read nothing more
	}
	k := objectKey{kind, name}
	f, done := e.objects[k]
	if !done {
		f = e.fetch(kind, name)
		e.objects[k] = f
	}
	switch {
	case f.notFound && optional:
		return nil, false
	case f.notFound:
		fix := fmt.Sprintf("create %s %s in namespace %s, or fix the reference in %s", kind, name, e.svc.Namespace, deployment)
		if kind == "secret" {
			fix = fmt.Sprintf("create it: kubectl create secret generic %s -n %s --from-literal=%s='postgresql://USER:PASSWORD@PRIVATE_HOST:25060/DATABASE?sslmode=require'", name, e.svc.Namespace, key)
		}
		e.report(kind, name, fmt.Sprintf("%s %s/%s does not exist (used by %s)", kind, e.svc.Namespace, name, user), fix)
		return nil, false
	case f.err != nil:
		if e.err == nil {
			e.err = fmt.Errorf("reading %s %s/%s: %w", kind, e.svc.Namespace, name, f.err)
			if apierrors.IsForbidden(f.err) {
				e.err = fmt.Errorf("%w; let the guard get %ss in namespace %s (apply this version's manifests/rbac)", e.err, kind, e.svc.Namespace)
			}
		}
		return nil, false
	}
	return f.data, true
}

func (e *envResolver) fetch(kind, name string) fetched {
	key := types.NamespacedName{Namespace: e.svc.Namespace, Name: name}
	switch kind {
	case "secret":
		var s corev1.Secret
		if err := e.r.Get(e.ctx, key, &s); err != nil {
			return fetched{notFound: apierrors.IsNotFound(err), err: err}
		}
		wanted := e.wanted[objectKey{kind, name}]
		data := map[string]string{}
		for k, v := range s.Data {
			if wanted[k] {
				data[k] = string(v[:min(len(v), maxDSNLen+1)])
			}
		}
		for k, v := range s.StringData { // only set on objects that never went through the API server
			if wanted[k] {
				data[k] = v[:min(len(v), maxDSNLen+1)]
			}
		}
		return fetched{data: data}
	default:
		var cm corev1.ConfigMap
		if err := e.r.Get(e.ctx, key, &cm); err != nil {
			return fetched{notFound: apierrors.IsNotFound(err), err: err}
		}
		return fetched{data: keep(cm.Data, e.wanted[objectKey{kind, name}])}
	}
}

// keep returns the entries of data whose key is wanted, each value cut to
// maxDSNLen+1 bytes, in a new map: data can then be released.
func keep(data map[string]string, wanted map[string]bool) map[string]string {
	out := map[string]string{}
	for k, v := range data {
		if wanted[k] {
			out[k] = strings.Clone(v[:min(len(v), maxDSNLen+1)])
		}
	}
	return out
}

// wantedKeys returns, per Secret and ConfigMap, every key a lookup for the
// connection strings of deployments may ask for: the keys their env entries
// reference, and, for each envFrom source, the names that may be looked up
// in it (names, and every $(VAR) an env value refers to) less its prefix.
// It over-approximates, never under: a key it leaves out is one no lookup
// asks for.
func wantedKeys(workloads []Workload, names []string) map[objectKey]map[string]bool {
	out := map[objectKey]map[string]bool{}
	add := func(kind, name, key string) {
		k := objectKey{kind, name}
		if out[k] == nil {
			out[k] = map[string]bool{}
		}
		out[k][key] = true
	}
	for i := range workloads {
		if workloads[i].Template == nil {
			continue // nothing of its own to read
		}
		spec := &workloads[i].Template.Spec
		for _, cs := range [][]corev1.Container{spec.Containers, spec.InitContainers} {
			for ci := range cs {
				c := &cs[ci]
				lookups := slices.Clone(names)
				for _, ev := range c.Env {
					switch {
					case ev.ValueFrom == nil:
						if strings.Contains(ev.Value, "$") {
							lookups = append(lookups, envRefs(ev.Value)...)
						}
					case ev.ValueFrom.SecretKeyRef != nil:
						add("secret", ev.ValueFrom.SecretKeyRef.Name, ev.ValueFrom.SecretKeyRef.Key)
					case ev.ValueFrom.ConfigMapKeyRef != nil:
						add("configmap", ev.ValueFrom.ConfigMapKeyRef.Name, ev.ValueFrom.ConfigMapKeyRef.Key)
					}
				}
				for _, ef := range c.EnvFrom {
					for _, n := range lookups {
						key, ok := strings.CutPrefix(n, ef.Prefix)
						if !ok {
							continue
						}
						if ef.SecretRef != nil {
							add("secret", ef.SecretRef.Name, key)
						}
						if ef.ConfigMapRef != nil {
							add("configmap", ef.ConfigMapRef.Name, key)
						}
					}
				}
			}
		}
	}
	return out
}

func (e *envResolver) report(kind, name, message, fix string) {
	reason := ReasonDatabaseSecretNotFound
	if kind == "configmap" {
		reason = ReasonDatabaseConfigMapNotFound
	}
	e.add(Finding{
		Check: CheckDatabase, Severity: Deny, Service: e.svc, Object: kind + " " + name,
		Reason: reason, Message: message, Fix: fix,
	})
}

// add appends f unless the same finding is already there.
func (e *envResolver) add(f Finding) {
	id := string(f.Reason) + "\x00" + f.Message
	if !e.reported[id] {
		e.reported[id] = true
		e.findings = append(e.findings, f)
	}
}

// expandEnv expands $(NAME) references in s like the kubelet
// (k8s.io/kubernetes third_party/forked/golang/expansion): $$ is a literal
// $, an unresolved, empty or unterminated reference stays as written, and a
// value looked up is not expanded again. fits is false, and
// the result cut short, when it would be longer than limit bytes (a
// negative limit is no limit).
func expandEnv(s string, limit int, lookup func(string) (string, bool)) (_ string, fits bool) {
	if !strings.Contains(s, "$") {
		return s, limit < 0 || len(s) <= limit
	}
	var b strings.Builder
	write := func(v string) bool {
		if limit >= 0 && b.Len()+len(v) > limit {
			return false
		}
		b.WriteString(v)
		return true
	}
	unclosed := false
	for i := 0; i < len(s); i++ {
		out := s[i : i+1]
		if s[i] == '$' && i+1 < len(s) {
			switch s[i+1] {
			case '$':
				i++
			case '(':
				end := -1
				if !unclosed {
					end = strings.IndexByte(s[i+2:], ')')
				}
				if end < 0 {
					// An unterminated reference: "$(" stays and the
					// scan goes on after it ($$ still escapes). No ')'
					// follows, so none is looked for again.
					unclosed = true
					out = "$("
					i++
					break
				}
				name := s[i+2 : i+2+end]
				v, ok := "", false
				if name != "" {
					v, ok = lookup(name)
				}
				if ok {
					out = v
				} else {
					out = s[i : i+3+end]
				}
				i += 2 + end
			}
		}
		if !write(out) {
			return b.String(), false
		}
	}
	return b.String(), true
}

// envRefs lists the names s refers to with $(NAME), as expandEnv reads them.
func envRefs(s string) []string {
	var refs []string
	seen := map[string]bool{}
	_, _ = expandEnv(s, -1, func(name string) (string, bool) {
		if !seen[name] {
			seen[name] = true
			refs = append(refs, name)
		}
		return "", false
	})
	return refs
}
