package e2e

import (
	"context"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/switchyard/switchyard/test/cluster"
)

const (
	ns        = "e2e"
	testImage = "localhost/switchyard-test:dev"
	echoTCP   = 8080
	echoUDP   = 8081
	// lbIP and localLBIP are the LoadBalancer addresses the test writes into the
	// Services' status, as a cloud controller would; external clients route them
	// to the first node.
	lbIP      = "192.0.2.100"
	localLBIP = "192.0.2.101"
)

// env is one run: the cluster and what the checks share.
type env struct {
	c  *cluster.Cluster
	o  Options
	p  proxy
	cs kubernetes.Interface
}

// deployment runs the echo server; node pins it to one node when not empty.
func deployment(name string, replicas int32, node string) *appsv1.Deployment {
	labels := map[string]string{"app": name}
	spec := corev1.PodSpec{
		// The pod keeps serving for a while after it is told to stop, as a real
		// service would, so a rolling update loses nothing while the endpoint
		// change travels to the proxies.
		TerminationGracePeriodSeconds: ptr.To[int64](10),
		Containers: []corev1.Container{{
			Name: "echo", Image: testImage, ImagePullPolicy: corev1.PullIfNotPresent,
			Command: []string{"/echo", "-tcp", fmt.Sprint(echoTCP), "-udp", fmt.Sprint(echoUDP)},
			ReadinessProbe: &corev1.Probe{
				ProbeHandler:  corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(echoTCP)}},
				PeriodSeconds: 1,
			},
			Lifecycle: &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{Sleep: &corev1.SleepAction{Seconds: 3}}},
			// A request, as any real service has: a BestEffort pod gets almost no
			// CPU while something else on the node is busy (an agent verifying its
			// programs for a second), and its answers wait.
			Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m")}},
		}},
		TopologySpreadConstraints: []corev1.TopologySpreadConstraint{{
			MaxSkew: 1, TopologyKey: "kubernetes.io/hostname", WhenUnsatisfiable: corev1.DoNotSchedule,
			LabelSelector: &metav1.LabelSelector{MatchLabels: labels},
		}},
	}
	if node != "" {
		spec.NodeSelector = map[string]string{"kubernetes.io/hostname": node}
	}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(replicas),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: spec},
		},
	}
}

type svcOpt func(*corev1.Service)

func service(name, app string, opts ...svcOpt) *corev1.Service {
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": app},
			Ports: []corev1.ServicePort{
				{Name: "tcp", Protocol: corev1.ProtocolTCP, Port: 80, TargetPort: intstr.FromInt32(echoTCP)},
				{Name: "udp", Protocol: corev1.ProtocolUDP, Port: 81, TargetPort: intstr.FromInt32(echoUDP)},
			},
		},
	}
	for _, o := range opts {
		o(s)
	}
	return s
}

func nodePort(s *corev1.Service) { s.Spec.Type = corev1.ServiceTypeNodePort }

func loadBalancer(ranges ...string) svcOpt {
	return func(s *corev1.Service) {
		s.Spec.Type = corev1.ServiceTypeLoadBalancer
		s.Spec.LoadBalancerSourceRanges = ranges
	}
}

func local(s *corev1.Service) {
	s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
}

func clientIPAffinity(s *corev1.Service) {
	s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
}

// workloads are what a run deploys in its namespace: Deployments, Services, and
// the LoadBalancer IP the test writes into each LoadBalancer Service's status.
type workloads struct {
	deps  []*appsv1.Deployment
	svcs  []*corev1.Service
	lbIPs map[string]string
}

// checkWorkloads are what the checks use.
func (e *env) checkWorkloads() workloads {
	nodes, ext := e.c.Nodes(), e.c.ExternalClients()
	return workloads{
		deps: []*appsv1.Deployment{
			deployment("echo", 2, ""),
			deployment("solo", 1, nodes[0].Name),
			deployment("client", 1, nodes[len(nodes)-1].Name),
			deployment("zero", 0, ""),
		},
		svcs: []*corev1.Service{
			service("echo", "echo"),
			service("echo-np", "echo", nodePort),
			service("echo-lb", "echo", loadBalancer(ext[0].IP+"/32")),
			service("solo-local", "solo", loadBalancer(), local),
			service("echo-affinity", "echo", clientIPAffinity),
			service("zero", "zero"),
		},
		lbIPs: map[string]string{"echo-lb": lbIP, "solo-local": localLBIP},
	}
}

// deploy creates the namespace, the Deployments and Services, writes the
// LoadBalancer status and waits until every Deployment is available.
func (e *env) deploy(ctx context.Context, w workloads) error {
	if _, err := e.cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	if err := e.c.WaitServiceAccount(ctx, ns); err != nil {
		return err
	}
	for _, d := range w.deps {
		if _, err := e.cs.AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{}); err != nil {
			return err
		}
	}
	for _, s := range w.svcs {
		if _, err := e.cs.CoreV1().Services(ns).Create(ctx, s, metav1.CreateOptions{}); err != nil {
			return err
		}
	}
	for name, ip := range w.lbIPs {
		if err := e.setLoadBalancerIP(ctx, name, ip); err != nil {
			return err
		}
	}
	for _, d := range w.deps {
		if err := e.waitDeployment(ctx, d.Name); err != nil {
			return err
		}
	}
	return nil
}

func (e *env) setLoadBalancerIP(ctx context.Context, name, ip string) error {
	s, err := e.cs.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: ip, IPMode: ptr.To(corev1.LoadBalancerIPModeVIP)}}
	_, err = e.cs.CoreV1().Services(ns).UpdateStatus(ctx, s, metav1.UpdateOptions{})
	return err
}

// waitDeployment waits until the rollout is complete: every replica updated and
// available, and no old one left.
func (e *env) waitDeployment(ctx context.Context, name string) error {
	var last string
	err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		d, err := e.cs.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		st, want := d.Status, *d.Spec.Replicas
		last = fmt.Sprintf("generation %d/%d, replicas %d updated %d available %d (want %d)",
			st.ObservedGeneration, d.Generation, st.Replicas, st.UpdatedReplicas, st.AvailableReplicas, want)
		return st.ObservedGeneration >= d.Generation && st.Replicas == want && st.UpdatedReplicas == want &&
			st.AvailableReplicas == want, nil
	})
	if err != nil {
		return fmt.Errorf("deployment %s: %w (%s)", name, err, last)
	}
	return nil
}

// podIPs are the IPs of the Deployment's running pods, and the name of one of them.
func (e *env) podIPs(ctx context.Context, app string) (map[string]bool, string, error) {
	pods, err := e.cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + app})
	if err != nil {
		return nil, "", err
	}
	ips, name := map[string]bool{}, ""
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning && p.Status.PodIP != "" {
			ips[p.Status.PodIP] = true
			name = p.Name
		}
	}
	return ips, name, nil
}
