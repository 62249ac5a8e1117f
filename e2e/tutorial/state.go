package tutorial

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/cutover-guard/cutover-guard/e2e/cluster"
)

// WaitTimeout bounds each wait for the cluster to reach a state.
const WaitTimeout = 90 * time.Second

// EnsureNamespace creates a namespace unless it exists.
func EnsureNamespace(ctx context.Context, c client.Client, name string) error {
	err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}})
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

// SetSecret makes Secret db-credentials in namespace hold dsn under key url,
// as `kubectl create secret generic db-credentials --from-literal=url=...` does.
func SetSecret(ctx context.Context, c client.Client, namespace, dsn string) error {
	return CreateOrReplace(ctx, c, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: Secret},
		Type:       corev1.SecretTypeOpaque,
		Data:       map[string][]byte{SecretKey: []byte(dsn)},
	})
}

// CreateOrReplace creates obj, or replaces the existing object's content
// with it (an update: the guard checks route updates).
func CreateOrReplace(ctx context.Context, c client.Client, obj client.Object) error {
	err := c.Create(ctx, obj.DeepCopyObject().(client.Object))
	if !apierrors.IsAlreadyExists(err) {
		return err
	}
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		have := obj.DeepCopyObject().(client.Object)
		if err := c.Get(ctx, client.ObjectKeyFromObject(obj), have); err != nil {
			return err
		}
		want := obj.DeepCopyObject().(client.Object)
		want.SetResourceVersion(have.GetResourceVersion())
		return c.Update(ctx, want)
	})
}

// Recreate deletes obj if it exists, waits until it is gone, and creates it
// afresh. A route created this way has a new resourceVersion and carries
// traffic to the backends obj names; the guard checks creates, so those
// backends must be able to serve (or the guard be registered without
// CREATE, or run with --check-create=false).
func Recreate(ctx context.Context, c client.Client, obj client.Object) error {
	if err := deleteAndWait(ctx, c, obj, nil); err != nil {
		return err
	}
	return c.Create(ctx, obj)
}

func deleteAndWait(ctx context.Context, c client.Client, obj client.Object, opts []client.DeleteOption) error {
	probe := obj.DeepCopyObject().(client.Object)
	if err := c.Delete(ctx, probe, opts...); err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, WaitTimeout, true, func(ctx context.Context) (bool, error) {
		err := c.Get(ctx, client.ObjectKeyFromObject(obj), probe)
		return apierrors.IsNotFound(err), nil
	})
	if err != nil {
		return fmt.Errorf("%T %s not gone: %w", obj, client.ObjectKeyFromObject(obj), err)
	}
	return nil
}

// Serve makes Deployment d (no unsatisfiable nodeSelector, replicas >= 1)
// roll out, and waits until it is fully Ready and the Service of the same
// name has one ready endpoint per replica.
func Serve(ctx context.Context, c client.Client, d *appsv1.Deployment) error {
	if err := CreateOrReplace(ctx, c, d); err != nil {
		return err
	}
	return WaitServing(ctx, c, d.Namespace, d.Name)
}

// HoldPending makes Deployment d, whose pods cannot be scheduled, exist
// with all its replicas Pending: a Deployment that is not Ready (0/N ready,
// N pending) and whose Service has no endpoints. A Deployment that served
// before is deleted first, so no Ready pod of it is left.
func HoldPending(ctx context.Context, c client.Client, d *appsv1.Deployment) error {
	var have appsv1.Deployment
	err := c.Get(ctx, client.ObjectKeyFromObject(d), &have)
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		return err
	case maps.Equal(have.Spec.Template.Spec.NodeSelector, d.Spec.Template.Spec.NodeSelector) &&
		have.Spec.Replicas != nil && d.Spec.Replicas != nil && *have.Spec.Replicas == *d.Spec.Replicas &&
		have.Status.ReadyReplicas == 0:
		// Already held; replace the rest of the spec in case a test changed it.
		if err := CreateOrReplace(ctx, c, d); err != nil {
			return err
		}
		return WaitPending(ctx, c, d.Namespace, d.Name)
	default:
		if err := deleteAndWait(ctx, c, d, []client.DeleteOption{client.PropagationPolicy(metav1.DeletePropagationForeground)}); err != nil {
			return err
		}
	}
	if err := c.Create(ctx, d.DeepCopy()); err != nil {
		return err
	}
	return WaitPending(ctx, c, d.Namespace, d.Name)
}

// WaitServing waits until Deployment name is cluster.FullyReady (every
// replica updated, ready and available, no old pods) and
// Service name has exactly one ready endpoint per replica.
func WaitServing(ctx context.Context, c client.Client, namespace, name string) error {
	var last string
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, WaitTimeout, true, func(ctx context.Context) (bool, error) {
		var d appsv1.Deployment
		if err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, &d); err != nil {
			last = err.Error()
			return false, nil
		}
		last = "deployment: " + cluster.DeploymentState(&d)
		if !cluster.FullyReady(&d) {
			return false, nil
		}
		n, err := cluster.ReadyEndpoints(ctx, c, namespace, name)
		last += fmt.Sprintf("; service %s: %d ready endpoints", name, n)
		return err == nil && n == int(cluster.Replicas(&d)), nil
	})
	if err != nil {
		return fmt.Errorf("deployment %s/%s not serving: %w (%s)", namespace, name, err, last)
	}
	return nil
}

// WaitPending waits until every replica of Deployment name exists, is
// up to date and none is ready, and Service name has no ready endpoint.
func WaitPending(ctx context.Context, c client.Client, namespace, name string) error {
	var last string
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, WaitTimeout, true, func(ctx context.Context) (bool, error) {
		var d appsv1.Deployment
		if err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, &d); err != nil {
			last = err.Error()
			return false, nil
		}
		want := cluster.Replicas(&d)
		st := d.Status
		last = fmt.Sprintf("deployment: generation %d observed %d, replicas %d/%d updated %d ready %d",
			d.Generation, st.ObservedGeneration, st.Replicas, want, st.UpdatedReplicas, st.ReadyReplicas)
		if st.ObservedGeneration < d.Generation || st.Replicas != want || st.UpdatedReplicas != want || st.ReadyReplicas != 0 {
			return false, nil
		}
		n, err := cluster.ReadyEndpoints(ctx, c, namespace, name)
		last += fmt.Sprintf("; service %s: %d ready endpoints", name, n)
		return err == nil && n == 0, nil
	})
	if err != nil {
		return fmt.Errorf("deployment %s/%s not held pending: %w (%s)", namespace, name, err, last)
	}
	return nil
}

// Setup creates the tutorial's objects in its namespace through the API
// (not kubectl): the Secret with dsn, blue serving, green held pending,
// the Services, the Gateway and the route to blue.
func Setup(ctx context.Context, c client.Client, dsn string) error {
	m, err := Load()
	if err != nil {
		return err
	}
	if err := EnsureNamespace(ctx, c, Namespace); err != nil {
		return err
	}
	if err := SetSecret(ctx, c, Namespace, dsn); err != nil {
		return err
	}
	for _, o := range []client.Object{m.BlueService, m.GreenService, m.Gateway} {
		if err := CreateOrReplace(ctx, c, o); err != nil {
			return err
		}
	}
	if err := m.ServeColors(ctx, c, false); err != nil {
		return err
	}
	return Recreate(ctx, c, m.Route)
}

// ServeColors makes blue serve and green serve (greenReady) or be held
// Pending (HoldPending), both at once, and waits for both.
func (m *Manifests) ServeColors(ctx context.Context, c client.Client, greenReady bool) error {
	errs := make(chan error, 2)
	go func() { errs <- Serve(ctx, c, m.Deployment(Blue, Replicas, false)) }()
	go func() {
		green := m.Deployment(Green, Replicas, !greenReady)
		if greenReady {
			errs <- Serve(ctx, c, green)
		} else {
			errs <- HoldPending(ctx, c, green)
		}
	}()
	return errors.Join(<-errs, <-errs)
}
