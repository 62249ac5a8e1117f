package manifests_test

import (
	"path"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
)

// The client-auth overlay is the default install with the guard given the
// client CA from ConfigMap cutover-guard-client-ca and the two flags that
// use it; nothing else changes.
func TestClientAuthOverlay(t *testing.T) {
	def, objs := build(t, "default"), build(t, "client-auth")
	if len(objs) != len(def) {
		t.Errorf("%d objects, want the default's %d", len(objs), len(def))
	}
	for _, o := range def {
		if o.GetKind() == "Deployment" {
			continue
		}
		got := find(objs, o.GetKind(), o.GetName())
		if got == nil {
			t.Errorf("the overlay lacks %s %s", o.GetKind(), o.GetName())
		} else if diff := cmp.Diff(o.Object, got.Object); diff != "" {
			t.Errorf("%s %s differs from the default's (-want +got):\n%s", o.GetKind(), o.GetName(), diff)
		}
	}

	var d, defD appsv1.Deployment
	mustFind(t, objs, "Deployment", name, &d)
	mustFind(t, def, "Deployment", name, &defD)
	checkDeployment(t, &d, false)
	c := d.Spec.Template.Spec.Containers[0]
	extra := slices.DeleteFunc(slices.Clone(c.Args), func(a string) bool { return slices.Contains(defD.Spec.Template.Spec.Containers[0].Args, a) })
	var caFile string
	for _, a := range extra {
		switch {
		case strings.HasPrefix(a, "--client-ca-file="):
			caFile = strings.TrimPrefix(a, "--client-ca-file=")
		case a == "--client-cn=kube-apiserver":
		default:
			t.Errorf("unexpected flag %s", a)
		}
	}
	if len(extra) != 2 || caFile == "" {
		t.Fatalf("flags added %q, want --client-ca-file and --client-cn=kube-apiserver", extra)
	}
	// The file the flag names is the ConfigMap's key, mounted read-only.
	var mounted bool
	for _, m := range c.VolumeMounts {
		if m.MountPath != path.Dir(caFile) {
			continue
		}
		for _, v := range d.Spec.Template.Spec.Volumes {
			if v.Name != m.Name || v.ConfigMap == nil || v.ConfigMap.Name != "cutover-guard-client-ca" {
				continue
			}
			for _, it := range v.ConfigMap.Items {
				if it.Key == "ca.crt" && it.Path == path.Base(caFile) {
					mounted = m.ReadOnly
				}
			}
		}
	}
	if !mounted {
		t.Errorf("--client-ca-file=%s is not key ca.crt of ConfigMap cutover-guard-client-ca mounted read-only: mounts %+v, volumes %+v",
			caFile, c.VolumeMounts, d.Spec.Template.Spec.Volumes)
	}
}
