package checks

import (
	"context"
	"fmt"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/cutover-guard/cutover-guard/checks/probe"
)

// objectKey names a Secret ("secret") or ConfigMap ("configmap") of the
// target's namespace.
type objectKey struct{ kind, name string }

// fetched is one Secret's or ConfigMap's data, or why it could not be read.
type fetched struct {
	data     map[string]string
	notFound bool
	err      error
}

// envResolver resolves environment variables of a Deployment's containers as
// the kubelet would, reading each Secret and ConfigMap at most once.
type envResolver struct {
	ctx      context.Context
	r        client.Reader
	svc      types.NamespacedName
	objects  map[objectKey]fetched
	findings []Finding
	reported map[string]bool
	// err is the first read that failed other than NotFound: the check
	// cannot decide, and ends with it.
	err error
}

// value resolves variable name in container c from env entries before index
// upTo and from envFrom. ok is false if the variable is unset, optional and
// missing, comes from a field reference, or its source is broken (which adds
// a finding) or could not be read (which sets e.err).
func (e *envResolver) value(dep *appsv1.Deployment, c *corev1.Container, name string, upTo int) (string, dsnSource, bool) {
	for i := upTo - 1; i >= 0; i-- {
		ev := &c.Env[i]
		if ev.Name != name {
			continue
		}
		user := fmt.Sprintf("env %s of container %s in deployment %s", probe.Printable(name), c.Name, dep.Name)
		switch {
		case ev.ValueFrom == nil:
			src := dsnSource{kind: "env", namespace: dep.Namespace, envName: name, container: c.Name, deployment: dep.Name}
			v := expandEnv(ev.Value, func(ref string) (string, bool) {
				rv, rsrc, ok := e.value(dep, c, ref, i)
				if ok {
					src.refs = append(src.refs, "$("+probe.Printable(ref)+") from "+rsrc.base())
				}
				return rv, ok
			})
			return v, src, true
		case ev.ValueFrom.SecretKeyRef != nil:
			ref := ev.ValueFrom.SecretKeyRef
			v, ok := e.key("secret", ref.Name, ref.Key, ref.Optional != nil && *ref.Optional, user, dep.Name)
			return v, dsnSource{kind: "secret", namespace: dep.Namespace, name: ref.Name, key: ref.Key, envName: name, container: c.Name, deployment: dep.Name}, ok
		case ev.ValueFrom.ConfigMapKeyRef != nil:
			ref := ev.ValueFrom.ConfigMapKeyRef
			v, ok := e.key("configmap", ref.Name, ref.Key, ref.Optional != nil && *ref.Optional, user, dep.Name)
			return v, dsnSource{kind: "configmap", namespace: dep.Namespace, name: ref.Name, key: ref.Key, envName: name, container: c.Name, deployment: dep.Name}, ok
		default:
			return "", dsnSource{}, false
		}
	}
	for j := len(c.EnvFrom) - 1; j >= 0; j-- {
		ef := &c.EnvFrom[j]
		key, ok := strings.CutPrefix(name, ef.Prefix)
		if !ok {
			continue
		}
		user := fmt.Sprintf("envFrom of container %s in deployment %s", c.Name, dep.Name)
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
		data, ok := e.object(kind, objName, key, optional, user, dep.Name)
		if !ok {
			continue
		}
		if v, ok := data[key]; ok {
			return v, dsnSource{kind: kind, namespace: dep.Namespace, name: objName, key: key, envName: name, container: c.Name, deployment: dep.Name}, true
		}
	}
	return "", dsnSource{}, false
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
			fmt.Sprintf("add key %s to %s %s, or fix the key in deployment %s", key, kind, name, deployment))
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
		fix := fmt.Sprintf("create %s %s in namespace %s, or fix the reference in deployment %s", kind, name, e.svc.Namespace, deployment)
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
		data := make(map[string]string, len(s.Data)+len(s.StringData))
		for k, v := range s.Data {
			data[k] = string(v)
		}
		for k, v := range s.StringData { // only set on objects that never went through the API server
			data[k] = v
		}
		return fetched{data: data}
	default:
		var cm corev1.ConfigMap
		if err := e.r.Get(e.ctx, key, &cm); err != nil {
			return fetched{notFound: apierrors.IsNotFound(err), err: err}
		}
		return fetched{data: cm.Data}
	}
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

// expandEnv expands $(NAME) references like the kubelet: $$ is a literal $,
// an unresolved or unterminated reference stays as written.
func expandEnv(s string, lookup func(string) (string, bool)) string {
	if !strings.Contains(s, "$") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteString(s[i:])
				return b.String()
			}
			name := s[i+2 : i+2+end]
			v, ok := "", false
			if name != "" {
				v, ok = lookup(name)
			}
			if ok {
				b.WriteString(v)
			} else {
				b.WriteString(s[i : i+3+end])
			}
			i += 2 + end
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}
