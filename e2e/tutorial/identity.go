package tutorial

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/cutover-guard/cutover-guard/e2e/cluster"
)

// The guard's identity as the install gives it: the ServiceAccount
// cutover-guard/cutover-guard bound to manifests/rbac's ClusterRole.
const (
	GuardNamespace      = "cutover-guard"
	GuardServiceAccount = "cutover-guard"
)

// ServiceAccountKubeconfig applies manifests/rbac of this checkout to c,
// requests a token for the guard's ServiceAccount (valid for a day) and
// writes a kubeconfig using it to path. A guard started with it reads the
// cluster as an installed one does: a bound token, and only what the
// shipped ClusterRole grants.
func ServiceAccountKubeconfig(ctx context.Context, c *cluster.Cluster, path string) error {
	root, err := RepoRoot()
	if err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(c.Config)
	if err != nil {
		return err
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: GuardNamespace}}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	out, err := c.KubectlCommand(ctx, "apply", "-k", filepath.Join(root, "manifests", "rbac")).CombinedOutput()
	if err != nil {
		return fmt.Errorf("kubectl apply -k manifests/rbac: %w: %s", err, out)
	}
	expiry := int64(24 * 60 * 60)
	tr, err := cs.CoreV1().ServiceAccounts(GuardNamespace).CreateToken(ctx, GuardServiceAccount,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &expiry}}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("token for %s/%s: %w", GuardNamespace, GuardServiceAccount, err)
	}
	kc := clientcmdapi.NewConfig()
	kc.Clusters["local"] = &clientcmdapi.Cluster{Server: c.Config.Host, CertificateAuthorityData: c.Config.CAData}
	kc.AuthInfos["guard"] = &clientcmdapi.AuthInfo{Token: tr.Status.Token}
	kc.Contexts["guard"] = &clientcmdapi.Context{Cluster: "local", AuthInfo: "guard"}
	kc.CurrentContext = "guard"
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return clientcmd.WriteToFile(*kc, path)
}
