// Package tutorial runs the blue-green tutorial's workflow
// (seed/blue-green-doks-gateway-api) against a local control plane: its
// manifests as typed objects, its commands as it prints them, the real
// cutover-guard binary started out of cluster behind a throwaway CA and
// registered as a validating webhook, and the real kubectl.
//
// The e2e tests, the demo (e2e/demo), the install's tests (manifests), the
// benchmarks and the soak share it: one guard launcher (StartGuard), one
// readiness rule for a started guard (/readyz), and the webhook
// configuration users install (package manifests), pointed at the local
// guard. It treats the guard as a black box reached through its stable
// interface (flags, webhook paths, /metrics): it never decides whether a
// cutover is safe, and it imports none of the guard's packages.
package tutorial

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/cutover-guard/cutover-guard/e2e"
)

// Names the tutorial uses.
const (
	Namespace = "production"
	Route     = "myapp"
	Gateway   = "public"
	Blue      = "app-blue"
	Green     = "app-green"
	// Secret holds the database connection string under SecretKey; both
	// Deployments read it as DATABASE_URL.
	Secret    = "db-credentials"
	SecretKey = "url"
	// Replicas is the tutorial's replica count for blue and green.
	Replicas = 2
)

// The tutorial's commands, exactly as it prints them.
const (
	// CutoverCommand switches the route from blue to green.
	CutoverCommand = `kubectl patch httproute myapp -n production --type=json -p='[{"op":"replace","path":"/spec/rules/0/backendRefs/0/name","value":"app-green"}]'`
	// RollbackCommand switches the route back to blue.
	RollbackCommand = `kubectl patch httproute myapp -n production --type=json -p='[{"op":"replace","path":"/spec/rules/0/backendRefs/0/name","value":"app-blue"}]'`
	// BackendCommand is the troubleshooting table's check of where traffic goes.
	BackendCommand = `kubectl get httproute myapp -n production -o jsonpath='{.spec.rules[0].backendRefs[0].name}'`
	// ScaleBlueDownCommand saves resources once green is stable.
	ScaleBlueDownCommand = `kubectl scale deployment app-blue -n production --replicas=0`
	// ScaleBlueUpCommand brings blue back before a rollback.
	ScaleBlueUpCommand = `kubectl scale deployment app-blue -n production --replicas=2`
	// PatchedOutput is what the tutorial expects a cutover or rollback to print.
	PatchedOutput = "httproute.gateway.networking.k8s.io/myapp patched"
)

// The tutorial's manifest files.
const (
	BlueFile     = "app-blue.yaml"
	GreenFile    = "app-green.yaml"
	ServicesFile = "services.yaml"
	GatewayFile  = "gateway.yaml"
	RouteFile    = "httproute.yaml"
)

// Files lists the manifest files in the order the tutorial applies them.
var Files = []string{BlueFile, GreenFile, ServicesFile, GatewayFile, RouteFile}

// UnschedulableNodeSelector is a nodeSelector no node has: pods with it stay
// Pending, which makes a Deployment that never becomes Ready (a release that
// cannot start).
var UnschedulableNodeSelector = map[string]string{"cutover-guard.dev/e2e-node": "none"}

// Scheme holds the types the tutorial uses: core Kubernetes and Gateway API.
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(gwv1.Install(s))
	return s
}

// Manifests are the tutorial's objects, decoded from its YAML.
type Manifests struct {
	BlueDeployment  *appsv1.Deployment
	GreenDeployment *appsv1.Deployment
	BlueService     *corev1.Service
	GreenService    *corev1.Service
	Gateway         *gwv1.Gateway
	Route           *gwv1.HTTPRoute
}

// Load decodes the tutorial's manifests. Each call returns fresh objects.
func Load() (*Manifests, error) {
	objs, err := decodeAll()
	if err != nil {
		return nil, err
	}
	m := &Manifests{}
	for _, o := range objs {
		switch v := o.(type) {
		case *appsv1.Deployment:
			switch v.Name {
			case Blue:
				m.BlueDeployment = v
			case Green:
				m.GreenDeployment = v
			}
		case *corev1.Service:
			switch v.Name {
			case Blue:
				m.BlueService = v
			case Green:
				m.GreenService = v
			}
		case *gwv1.Gateway:
			m.Gateway = v
		case *gwv1.HTTPRoute:
			m.Route = v
		}
	}
	if m.BlueDeployment == nil || m.GreenDeployment == nil || m.BlueService == nil || m.GreenService == nil || m.Gateway == nil || m.Route == nil {
		return nil, errors.New("tutorial manifests: an object is missing")
	}
	return m, nil
}

// MustLoad is Load for callers that treat a broken embedded file as a bug.
func MustLoad() *Manifests {
	m, err := Load()
	if err != nil {
		panic(err)
	}
	return m
}

// Deployment returns a copy of the tutorial's Deployment name (Blue or
// Green) with the given replicas; pending adds UnschedulableNodeSelector.
func (m *Manifests) Deployment(name string, replicas int32, pending bool) *appsv1.Deployment {
	var d *appsv1.Deployment
	switch name {
	case Blue:
		d = m.BlueDeployment.DeepCopy()
	case Green:
		d = m.GreenDeployment.DeepCopy()
	default:
		panic("tutorial: no deployment " + name)
	}
	d.Spec.Replicas = &replicas
	if pending {
		d.Spec.Template.Spec.NodeSelector = UnschedulableNodeSelector
	}
	return d
}

func decodeAll() ([]client.Object, error) {
	decoder := serializer.NewCodecFactory(Scheme()).UniversalDeserializer()
	var out []client.Object
	for _, name := range Files {
		raw, err := fs.ReadFile(e2e.Tutorial, path.Join(e2e.TutorialDir, name))
		if err != nil {
			return nil, err
		}
		r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(raw)))
		for {
			doc, err := r.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			if len(bytes.TrimSpace(doc)) == 0 {
				continue
			}
			obj, _, err := decoder.Decode(doc, nil, nil)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			co, ok := obj.(client.Object)
			if !ok {
				return nil, fmt.Errorf("%s: %T is not an object", name, obj)
			}
			out = append(out, co)
		}
	}
	return out, nil
}

// WriteFiles copies the tutorial's manifest files into dir, so that
// `kubectl apply -f app-blue.yaml` can run there as printed. pendingGreen
// writes app-green.yaml with UnschedulableNodeSelector added to its pods.
func WriteFiles(dir string, pendingGreen bool) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, name := range Files {
		raw, err := fs.ReadFile(e2e.Tutorial, path.Join(e2e.TutorialDir, name))
		if err != nil {
			return err
		}
		if name == GreenFile && pendingGreen {
			raw, err = withNodeSelector(raw)
			if err != nil {
				return err
			}
		}
		if err := os.WriteFile(filepath.Join(dir, name), raw, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// withNodeSelector adds UnschedulableNodeSelector to a Deployment manifest,
// keeping the rest of the text as the tutorial wrote it.
func withNodeSelector(raw []byte) ([]byte, error) {
	anchor := []byte("    spec:\n      containers:\n")
	if bytes.Count(raw, anchor) != 1 {
		return nil, errors.New("app-green.yaml: pod spec not found")
	}
	var sel bytes.Buffer
	sel.WriteString("    spec:\n      # no node has this label: the pods stay Pending\n      nodeSelector:\n")
	for k, v := range UnschedulableNodeSelector {
		fmt.Fprintf(&sel, "        %s: %s\n", k, v)
	}
	sel.WriteString("      containers:\n")
	return bytes.Replace(raw, anchor, sel.Bytes(), 1), nil
}
