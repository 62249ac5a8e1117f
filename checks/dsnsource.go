package checks

import (
	"context"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/cutover-guard/cutover-guard/checks/probe"
)

// dsnUse is a distinct connection string and the first place it was found.
type dsnUse struct {
	value string
	src   dsnSource
	// workloads are the indexes of the workloads whose containers use it.
	workloads []int
}

// discoverDSNs collects the distinct connection strings of the workloads'
// containers, in the order found, and findings for broken references (or the
// warning that there is none). An error means a Secret or ConfigMap could not
// be read (other than NotFound).
func discoverDSNs(ctx context.Context, r client.Reader, svc types.NamespacedName, workloads []Workload, envNames []string) ([]dsnUse, []Finding, error) {
	envNames = databaseEnvNames(envNames)
	res := newEnvResolver(ctx, r, svc, workloads, envNames)
	var uses []dsnUse
	// seen is the index in uses of each value found, -1 for one too long.
	seen := map[string]int{}
	var looked []string
	firstChecked := ""
	for i := range workloads {
		dep := &workloads[i]
		if dep.Template == nil {
			continue // a Rollout with a workloadRef: no template of its own
		}
		names := envNames
		if a, ok := dep.Object.GetAnnotations()[AnnotationDatabaseURLEnv]; ok {
			var over bool
			names, over = splitNames(a, maxAnnotationEnvNames)
			if over {
				res.add(Finding{
					Check: CheckDatabase, Severity: Deny, Service: svc, Object: dep.Ref(), Reason: ReasonDatabaseTooManyURLs,
					Message: fmt.Sprintf("annotation %s of %s names more than %d env vars; the guard reads at most %d",
						AnnotationDatabaseURLEnv, dep.Ref(), maxAnnotationEnvNames, maxAnnotationEnvNames),
					Fix: fmt.Sprintf("name only the env vars that hold connection strings, at most %d, in annotation %s", maxAnnotationEnvNames, AnnotationDatabaseURLEnv),
				})
			}
			if len(names) == 0 {
				continue // turned off for this workload
			}
		}
		if firstChecked == "" {
			firstChecked = dep.Ref()
		}
		for _, n := range names {
			if n = probe.Printable(n); !slices.Contains(looked, n) {
				looked = append(looked, n)
			}
		}
		spec := &dep.Template.Spec
		containers := slices.Clone(spec.Containers)
		for _, c := range spec.InitContainers {
			if c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
				containers = append(containers, c)
			}
		}
		for ci := range containers {
			c := &containers[ci]
			for _, n := range names {
				v := res.value(dep, c, n)
				if res.err != nil {
					return nil, nil, res.err
				}
				if v.tooLong != "" {
					res.tooLong(dep, c, n, v)
				}
				if !v.ok {
					continue
				}
				if at, ok := seen[v.v]; ok {
					if at >= 0 && !slices.Contains(uses[at].workloads, i) {
						uses[at].workloads = append(uses[at].workloads, i)
					}
					continue
				}
				if len(v.v) > maxDSNLen {
					seen[v.v] = -1
					res.add(dsnTooLong(svc, dep, c, n, v.src))
					continue
				}
				seen[v.v] = len(uses)
				uses = append(uses, dsnUse{value: v.v, src: v.src, workloads: []int{i}})
			}
		}
	}
	if res.err != nil {
		return nil, nil, res.err
	}
	if len(uses) == 0 && len(res.findings) == 0 && firstChecked != "" {
		res.findings = append(res.findings, Finding{
			Check:    CheckDatabase,
			Severity: Warn,
			Service:  svc,
			Object:   firstChecked,
			Reason:   ReasonDatabaseURLNotFound,
			Message:  fmt.Sprintf("no database connection string found (looked for %s); database check skipped", nameList(looked)),
		})
	}
	return uses, res.findings, nil
}

// databaseEnvNames is envNames, or DefaultDatabaseURLEnv when it names none:
// the env vars a connection string is looked for in when a workload's
// annotation does not say.
func databaseEnvNames(envNames []string) []string {
	if len(envNames) == 0 {
		return []string{DefaultDatabaseURLEnv}
	}
	return envNames
}

// newEnvResolver is the resolver of the connection strings of workloads,
// named by envNames or their annotations, of Service svc.
func newEnvResolver(ctx context.Context, r client.Reader, svc types.NamespacedName, workloads []Workload, envNames []string) *envResolver {
	return &envResolver{ctx: ctx, r: r, svc: svc, objects: map[objectKey]fetched{}, reported: map[string]bool{},
		containers: map[*corev1.Container]*containerEnv{}, wanted: wantedKeys(workloads, lookedUpNames(workloads, envNames))}
}

// maxDSNLen bounds a connection string, in bytes. A real one (user,
// password, host, port, database, a few parameters) takes a few hundred;
// a longer one is denied before it is parsed.
const maxDSNLen = 4 << 10

// ReasonDatabaseURLTooLong marks a connection string longer than maxDSNLen.
const ReasonDatabaseURLTooLong Reason = "DatabaseURLTooLong"

// dsnTooLong is the denial of env name of container c, whose connection
// string (from src) is longer than maxDSNLen.
func dsnTooLong(svc types.NamespacedName, w *Workload, c *corev1.Container, name string, src dsnSource) Finding {
	return Finding{
		Check: CheckDatabase, Severity: Deny, Service: svc, Object: src.object(), Reason: ReasonDatabaseURLTooLong,
		Message: fmt.Sprintf("the connection string in env %s of container %s in %s (%s) is longer than %d bytes; the guard does not parse it",
			probe.Printable(name), c.Name, w.Ref(), src, maxDSNLen),
		Fix: fmt.Sprintf("put only the connection string in %s: a real one takes a few hundred bytes", src.base()),
	}
}

// lookedUpNames is every env name discoverDSNs may look up for
// workloads: envNames, and those each one's annotation names.
func lookedUpNames(workloads []Workload, envNames []string) []string {
	names := slices.Clone(envNames)
	for i := range workloads {
		if a, ok := workloads[i].Object.GetAnnotations()[AnnotationDatabaseURLEnv]; ok {
			more, _ := splitNames(a, maxAnnotationEnvNames)
			names = append(names, more...)
		}
	}
	return names
}

// maxAnnotationEnvNames bounds the env var names read from
// AnnotationDatabaseURLEnv: more is a Deny finding.
const maxAnnotationEnvNames = 16

// splitNames returns the distinct names of the comma-separated list s, at
// most limit of them; over is true if s names more.
func splitNames(s string, limit int) (_ []string, over bool) {
	var out []string
	for n := range strings.SplitSeq(s, ",") {
		if n = strings.TrimSpace(n); n != "" && !slices.Contains(out, n) {
			if len(out) == limit {
				return out, true
			}
			out = append(out, n)
		}
	}
	return out, false
}

func nameList(names []string) string {
	s := []rune(strings.Join(names, ", "))
	if len(s) > 60 {
		return string(s[:57]) + "..."
	}
	return string(s)
}

// dsnSource says where a connection string came from; it names objects and
// keys, never values.
type dsnSource struct {
	kind       string // "secret", "configmap" or "env" (a literal value)
	namespace  string
	name       string // the Secret or ConfigMap; the workload for "env"
	key        string
	envName    string
	container  string
	deployment string // the workload's name
	// workloadKind is the workload's Kind; empty means Deployment.
	workloadKind string
	refs         []string // "$(DB_PASSWORD) from secret ns/db key password"
	// refObjects are the Secrets and ConfigMaps the references of a
	// literal value were read from, through other variables too.
	refObjects []ObjectRef
}

// revealed is every Secret and ConfigMap the value found at s was read
// from, in part or whole; empty for a literal with no such references.
func (s dsnSource) revealed() []ObjectRef {
	switch s.kind {
	case "secret", "configmap":
		return []ObjectRef{{Resource: s.kind + "s", Namespace: s.namespace, Name: s.name}}
	}
	return s.refObjects
}

// addRefObjects adds objs to s.refObjects, each once.
func (s *dsnSource) addRefObjects(objs []ObjectRef) {
	for _, o := range objs {
		if !slices.Contains(s.refObjects, o) {
			s.refObjects = append(s.refObjects, o)
		}
	}
}

func (s dsnSource) base() string {
	switch s.kind {
	case "secret", "configmap":
		return fmt.Sprintf("%s %s/%s key %s", s.kind, s.namespace, s.name, s.key)
	default:
		return fmt.Sprintf("env %s of container %s in %s %s/%s", probe.Printable(s.envName), s.container, s.workloadKindName(), s.namespace, s.deployment)
	}
}

// maxListedRefs bounds the references a source names.
const maxListedRefs = 4

func (s dsnSource) String() string {
	if len(s.refs) == 0 {
		return s.base()
	}
	refs := s.refs
	more := ""
	if len(refs) > maxListedRefs {
		refs, more = refs[:maxListedRefs], fmt.Sprintf(" and %d more", len(refs)-maxListedRefs)
	}
	return s.base() + " (with " + strings.Join(refs, ", ") + more + ")"
}

func (s dsnSource) object() string {
	switch s.kind {
	case "secret", "configmap":
		return s.kind + " " + s.name
	default:
		return s.workloadKindName() + " " + s.deployment
	}
}

// workloadKindName is the workload's kind as messages write it: "deployment".
func (s dsnSource) workloadKindName() string {
	if s.workloadKind == "" {
		return "deployment"
	}
	return strings.ToLower(s.workloadKind)
}
