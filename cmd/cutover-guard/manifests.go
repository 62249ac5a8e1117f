package main

// The guard's permissions and webhook configuration, as controller-gen
// markers; `make manifests` generates manifests/rbac/role.yaml and
// manifests/webhook/manifests.yaml from them, and a test fails when those
// files are stale. The certificate rotator's own permissions are in package
// certs.
//
// Package checks judges by live state, and reads Secrets and ConfigMaps
// only by name, for the database check. It finds objects with LISTs that
// a watch cache answers (the ReplicaSets and pods a Service's selector
// matches and the Service's EndpointSlices, metadata only: by default the
// guard's own metadata informers, hence watch on those three, or with
// --find-from=apiserver the API server's watch cache; the ReferenceGrants
// of its namespace) and judges each by a GET by name (checks/reads.go,
// checks/findcache.go). Nothing else is listed or watched. Workloads are read by
// name, never listed: the Deployment named like the Service, and the
// controllers of the matching ReplicaSets and pods: Deployments,
// StatefulSets, DaemonSets, Argo Rollouts, and pods without a controller. A
// selector switch lists the newly selected pods whole, for their readiness
// and ports. RBAC cannot restrict a pod list to metadata: docs/security.md
// says what the list of pods gives the guard. The smoke gate reads each
// endpoint's Pod by name before calling its address.
//
// +kubebuilder:rbac:groups="",resources=services,verbs=get
// +kubebuilder:rbac:groups=apps,resources=deployments;statefulsets;daemonsets,verbs=get
// +kubebuilder:rbac:groups=apps,resources=replicasets,verbs=list;watch
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch
// +kubebuilder:rbac:groups=argoproj.io,resources=rollouts,verbs=get
// +kubebuilder:rbac:groups=discovery.k8s.io,resources=endpointslices,verbs=get;list;watch
// +kubebuilder:rbac:groups=gateway.networking.k8s.io,resources=referencegrants,verbs=get;list
// +kubebuilder:rbac:groups="",resources=secrets;configmaps,verbs=get
//
// Package webhook records a CutoverDenied Event on a denied route (core/v1,
// created and then patched as it repeats; see webhook.LegacyRecorder):
//
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch
//
// and, before a finding that reveals what was read from a Secret or
// ConfigMap is shown to the requester, asks whether they may get it
// (--redact-unreadable):
//
// +kubebuilder:rbac:groups=authorization.k8s.io,resources=subjectaccessreviews,verbs=create
//
// Route creates and updates (never the status subresource: it is not
// listed); an update only when its spec changed (rules, parentRefs,
// hostnames: each can move traffic), so the matchCondition keeps label-,
// annotation- and status-only edits away from the guard altogether. With
// --check-create=false the guard allows creates without a look. Service
// updates only when spec.selector changed (a selector switch; never the
// status subresource). Objects in kube-system and the guard's own namespace
// are never checked, so the guard cannot block the cluster from repairing
// itself.
//
// +kubebuilder:webhookconfiguration:mutating=false,name=cutover-guard
// +kubebuilder:webhook:path=/validate-httproute,mutating=false,failurePolicy=fail,sideEffects=NoneOnDryRun,timeoutSeconds=5,matchPolicy=Equivalent,groups=gateway.networking.k8s.io,resources=httproutes,verbs=create;update,versions=v1,name=httproute.cutover-guard.dev,admissionReviewVersions=v1,serviceName=cutover-guard,serviceNamespace=cutover-guard,servicePort=443,patch=`{"namespaceSelector":{"matchExpressions":[{"key":"kubernetes.io/metadata.name","operator":"NotIn","values":["kube-system","cutover-guard"]}]},"matchConditions":[{"name":"spec-changed","expression":"oldObject == null || !has(object.spec) || !has(oldObject.spec) || object.spec != oldObject.spec"}]}`
// +kubebuilder:webhook:path=/validate-service,mutating=false,failurePolicy=fail,sideEffects=NoneOnDryRun,timeoutSeconds=5,matchPolicy=Equivalent,groups="",resources=services,verbs=update,versions=v1,name=service.cutover-guard.dev,admissionReviewVersions=v1,serviceName=cutover-guard,serviceNamespace=cutover-guard,servicePort=443,patch=`{"namespaceSelector":{"matchExpressions":[{"key":"kubernetes.io/metadata.name","operator":"NotIn","values":["kube-system","cutover-guard"]}]},"matchConditions":[{"name":"spec-selector-changed","expression":"oldObject == null || !has(object.spec) || !has(oldObject.spec) || has(object.spec.selector) != has(oldObject.spec.selector) || (has(object.spec.selector) && object.spec.selector != oldObject.spec.selector)"}]}`
// +kubebuilder:webhook:path=/validate-grpcroute,mutating=false,failurePolicy=fail,sideEffects=NoneOnDryRun,timeoutSeconds=5,matchPolicy=Equivalent,groups=gateway.networking.k8s.io,resources=grpcroutes,verbs=create;update,versions=v1,name=grpcroute.cutover-guard.dev,admissionReviewVersions=v1,serviceName=cutover-guard,serviceNamespace=cutover-guard,servicePort=443,patch=`{"namespaceSelector":{"matchExpressions":[{"key":"kubernetes.io/metadata.name","operator":"NotIn","values":["kube-system","cutover-guard"]}]},"matchConditions":[{"name":"spec-changed","expression":"oldObject == null || !has(object.spec) || !has(oldObject.spec) || object.spec != oldObject.spec"}]}`
