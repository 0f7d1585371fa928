// Package controlplane runs a real Kubernetes control plane for tests: etcd and
// kube-apiserver v1.37.2 (built by test/k8s/build.sh, `make controlplane`), both
// listening on 127.0.0.1 only. No controller-manager or scheduler runs: tests write
// the EndpointSlices themselves (label kubernetes.io/service-name and
// endpointslice.kubernetes.io/managed-by), and no ServiceAccounts exist.
//
//	cp := controlplane.StartForTest(t, controlplane.Options{})
//	cs := cp.Client()
//
// BridgeIntoNetns makes the API server reachable inside a network namespace
// without any listener outside loopback.
package controlplane

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/switchyard/switchyard/test/process"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// Version is the Kubernetes version test/k8s/build.sh builds.
const Version = "v1.37.2"

// Binaries are the programs Start and the tests need in BinDir.
var Binaries = []string{"etcd", "kube-apiserver", "kube-proxy"}

// BinDir is where test/k8s/build.sh puts the binaries:
// ${SWITCHYARD_CACHE:-$HOME/.cache/switchyard}/k8s-v1.37.2, or $SWITCHYARD_K8S_BIN.
func BinDir() string {
	if d := os.Getenv("SWITCHYARD_K8S_BIN"); d != "" {
		return d
	}
	cache := os.Getenv("SWITCHYARD_CACHE")
	if cache == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			home = os.TempDir()
		}
		cache = filepath.Join(home, ".cache", "switchyard")
	}
	return filepath.Join(cache, "k8s-"+Version)
}

// Missing lists the binaries absent from dir (or not executable).
func Missing(dir string) []string {
	var missing []string
	for _, b := range Binaries {
		st, err := os.Stat(filepath.Join(dir, b))
		if err != nil || st.IsDir() || st.Mode().Perm()&0o111 == 0 {
			missing = append(missing, b)
		}
	}
	return missing
}

// Require returns BinDir when the control plane's binaries are there. Otherwise
// it fails the test under CI (CI=true) and skips it elsewhere, saying how to
// build them.
func Require(t testing.TB) string {
	t.Helper()
	dir := BinDir()
	if missing := Missing(dir); len(missing) > 0 {
		msg := fmt.Sprintf("control plane binaries %v not found in %s: build them with `make controlplane` "+
			"(test/k8s/build.sh, ~6 min once) or point SWITCHYARD_K8S_BIN at a directory holding them", missing, dir)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return dir
}

// Options configure Start. The zero value is usable.
type Options struct {
	// BinDir holds etcd and kube-apiserver; default BinDir().
	BinDir string
	// ServiceCIDR is --service-cluster-ip-range; default 172.30.0.0/16.
	ServiceCIDR string
	// NodePortRange is --service-node-port-range; default 30000-32767.
	NodePortRange string
	// Dir is the work directory (etcd data, certificates, logs, kubeconfig); default
	// a new temporary directory, removed by Stop.
	Dir string
	// StartTimeout bounds the start (also bounded by Start's context); default 90 s.
	StartTimeout time.Duration
	// ExtraAPIServerArgs are appended to kube-apiserver's command line.
	ExtraAPIServerArgs []string
}

// ControlPlane is a running etcd and kube-apiserver.
type ControlPlane struct {
	opts    Options
	dir     string
	tempDir bool
	token   string
	url     string
	caData  []byte
	kubecfg string
	rc      *rest.Config
	client  kubernetes.Interface

	etcd, apiserver *proc

	mu       sync.Mutex
	bridges  map[int]func() error
	bridgeN  int
	sockDir  string // a short directory for bridge sockets when dir is too long
	kubecfgN int
	stopped  bool
	stopErr  error
}

const (
	defaultServiceCIDR   = "172.30.0.0/16"
	defaultNodePortRange = "30000-32767"
	stopGrace            = 15 * time.Second
)

// Start starts etcd and kube-apiserver and waits until the API server is ready.
// ctx bounds the start only: the processes run until Stop (or until the process
// that started them dies). On error nothing is left running.
func Start(ctx context.Context, opts Options) (_ *ControlPlane, err error) {
	if opts.BinDir == "" {
		opts.BinDir = BinDir()
	}
	if opts.ServiceCIDR == "" {
		opts.ServiceCIDR = defaultServiceCIDR
	}
	if opts.NodePortRange == "" {
		opts.NodePortRange = defaultNodePortRange
	}
	if opts.StartTimeout == 0 {
		opts.StartTimeout = 90 * time.Second
	}
	for _, b := range []string{"etcd", "kube-apiserver"} {
		if _, err := os.Stat(filepath.Join(opts.BinDir, b)); err != nil {
			return nil, fmt.Errorf("%s not found in %s: run `make controlplane` (test/k8s/build.sh)", b, opts.BinDir)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, opts.StartTimeout)
	defer cancel()

	c := &ControlPlane{opts: opts, dir: opts.Dir, bridges: map[int]func() error{}}
	if c.dir == "" {
		if c.dir, err = os.MkdirTemp("", "switchyard-cp-"); err != nil {
			return nil, err
		}
		c.tempDir = true
	} else if err := os.MkdirAll(c.dir, 0o700); err != nil {
		return nil, err
	}
	if c.dir, err = filepath.Abs(c.dir); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, c.Stop())
		}
	}()

	if err := c.writeCredentials(); err != nil {
		return nil, err
	}
	etcdURL, err := c.startEtcd(ctx)
	if err != nil {
		return nil, err
	}
	if err := c.startAPIServer(ctx, etcdURL); err != nil {
		return nil, err
	}
	if err := c.setUpClients(); err != nil {
		return nil, err
	}
	return c, nil
}

// StartForTest is Require, then Start with opts (BinDir defaults to Require's),
// with Stop registered in t.Cleanup. When the test failed, the cleanup logs the
// tail of both logs first.
func StartForTest(t testing.TB, opts Options) *ControlPlane {
	t.Helper()
	if opts.BinDir == "" {
		opts.BinDir = Require(t)
	}
	c, err := Start(context.Background(), opts)
	if err != nil {
		t.Fatalf("starting the control plane: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("kube-apiserver log (%s):\n%s", c.apiserver.log, process.TailFile(c.apiserver.log, 40))
			t.Logf("etcd log (%s):\n%s", c.etcd.log, process.TailFile(c.etcd.log, 20))
		}
		if err := c.Stop(); err != nil {
			t.Errorf("stopping the control plane: %v", err)
		}
	})
	return c
}

func (c *ControlPlane) writeCredentials() error {
	tok := make([]byte, 24)
	if _, err := rand.Read(tok); err != nil {
		return err
	}
	c.token = hex.EncodeToString(tok)
	// token,user,uid,"group,..."
	line := fmt.Sprintf("%s,admin,admin,\"system:masters\"\n", c.token)
	if err := os.WriteFile(c.path("tokens.csv"), []byte(line), 0o600); err != nil {
		return err
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	priv := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	pubDER, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return err
	}
	pub := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	if err := os.WriteFile(c.path("sa.key"), priv, 0o600); err != nil {
		return err
	}
	return os.WriteFile(c.path("sa.pub"), pub, 0o600)
}

func (c *ControlPlane) path(name string) string { return filepath.Join(c.dir, name) }

// bindAttempts is how often a start is retried when a port picked as free was
// taken before the server bound it.
const bindAttempts = 3

func (c *ControlPlane) startEtcd(ctx context.Context) (string, error) {
	var lastErr error
	for range bindAttempts {
		ports, err := freePorts(2)
		if err != nil {
			return "", err
		}
		client := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
		peer := fmt.Sprintf("http://127.0.0.1:%d", ports[1])
		logPath := c.path("etcd.log")
		p, err := startProc("etcd", logPath, filepath.Join(c.opts.BinDir, "etcd"),
			"--name=switchyard-test",
			"--data-dir="+c.path("etcd"),
			"--listen-client-urls="+client, "--advertise-client-urls="+client,
			"--listen-peer-urls="+peer, "--initial-advertise-peer-urls="+peer,
			"--initial-cluster=switchyard-test="+peer,
			"--unsafe-no-fsync", // a test cluster: speed over durability
			"--log-level=warn",
		)
		if err != nil {
			return "", err
		}
		c.etcd = p
		err = waitHTTP(ctx, p, client+"/health", "", func(code int, body []byte) bool {
			return code == http.StatusOK && bytes.Contains(body, []byte(`"health":"true"`))
		})
		if err == nil {
			return client, nil
		}
		// A port taken between choosing and binding it: try another one.
		lastErr = errors.Join(err, p.stop(stopGrace))
		if !logContains(logPath, "address already in use") {
			break
		}
	}
	return "", lastErr
}

func (c *ControlPlane) startAPIServer(ctx context.Context, etcdURL string) error {
	var lastErr error
	for range bindAttempts {
		ports, err := freePorts(1)
		if err != nil {
			return err
		}
		port := ports[0]
		logPath := c.path("kube-apiserver.log")
		args := []string{
			"--etcd-servers=" + etcdURL,
			"--bind-address=127.0.0.1",
			"--advertise-address=127.0.0.1",
			"--secure-port=" + strconv.Itoa(port),
			// A loopback advertise address is refused by the default reconciler.
			"--endpoint-reconciler-type=none",
			"--cert-dir=" + c.path("certs"),
			"--token-auth-file=" + c.path("tokens.csv"),
			"--authorization-mode=RBAC",
			"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
			"--service-account-key-file=" + c.path("sa.pub"),
			"--service-account-signing-key-file=" + c.path("sa.key"),
			"--service-cluster-ip-range=" + c.opts.ServiceCIDR,
			"--service-node-port-range=" + c.opts.NodePortRange,
		}
		args = append(args, c.opts.ExtraAPIServerArgs...)
		p, err := startProc("kube-apiserver", logPath, filepath.Join(c.opts.BinDir, "kube-apiserver"), args...)
		if err != nil {
			return err
		}
		c.apiserver = p
		u := fmt.Sprintf("https://127.0.0.1:%d", port)
		err = waitHTTP(ctx, p, u+"/readyz", c.token, func(code int, body []byte) bool {
			return code == http.StatusOK && string(body) == "ok"
		})
		if err == nil {
			c.url = u
			return nil
		}
		// A port taken between choosing and binding it: try another one.
		lastErr = errors.Join(err, p.stop(stopGrace))
		if !logContains(logPath, "address already in use") {
			break
		}
	}
	return lastErr
}

// setUpClients reads the serving certificate the API server generated, then
// builds the client and writes the kubeconfig.
func (c *ControlPlane) setUpClients() error {
	ca, err := os.ReadFile(filepath.Join(c.path("certs"), "apiserver.crt"))
	if err != nil {
		return fmt.Errorf("reading the API server's self-signed certificate: %w", err)
	}
	c.caData = ca
	c.rc = &rest.Config{
		Host:            c.url,
		BearerToken:     c.token,
		TLSClientConfig: rest.TLSClientConfig{CAData: ca},
		QPS:             200,
		Burst:           400,
		Proxy:           noProxy,
	}
	if c.client, err = kubernetes.NewForConfig(c.rc); err != nil {
		return err
	}
	c.kubecfg = c.path("kubeconfig")
	return c.writeKubeconfig(c.kubecfg, c.url)
}

func noProxy(*http.Request) (*url.URL, error) { return nil, nil }

func (c *ControlPlane) writeKubeconfig(path, server string) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["switchyard-test"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: c.caData}
	cfg.AuthInfos["admin"] = &clientcmdapi.AuthInfo{Token: c.token}
	cfg.Contexts["switchyard-test"] = &clientcmdapi.Context{Cluster: "switchyard-test", AuthInfo: "admin"}
	cfg.CurrentContext = "switchyard-test"
	return clientcmd.WriteToFile(*cfg, path)
}

// URL is the API server's address, https://127.0.0.1:PORT.
func (c *ControlPlane) URL() string { return c.url }

// Token is a bearer token of user admin in group system:masters.
func (c *ControlPlane) Token() string { return c.token }

// CAData is the PEM bundle that verifies the API server's serving certificate
// (valid for 127.0.0.1, localhost and the service CIDR's first address).
func (c *ControlPlane) CAData() []byte { return c.caData }

// Dir is the work directory: etcd data, certificates, logs (etcd.log,
// kube-apiserver.log, bridge-*.log) and kubeconfigs.
func (c *ControlPlane) Dir() string { return c.dir }

// Kubeconfig is the path of a kubeconfig for URL, as admin.
func (c *ControlPlane) Kubeconfig() string { return c.kubecfg }

// KubeconfigFor writes a kubeconfig (admin, same CA) for another server URL, such
// as https://127.0.0.1:PORT of a BridgeIntoNetns bridge, and returns its path.
func (c *ControlPlane) KubeconfigFor(server string) (string, error) {
	c.mu.Lock()
	c.kubecfgN++
	path := c.path(fmt.Sprintf("kubeconfig-%d", c.kubecfgN))
	c.mu.Unlock()
	if err := c.writeKubeconfig(path, server); err != nil {
		return "", err
	}
	return path, nil
}

// Client is a clientset for the API server as admin (QPS 200, burst 400).
func (c *ControlPlane) Client() kubernetes.Interface { return c.client }

// RESTConfig returns a copy of the client configuration.
func (c *ControlPlane) RESTConfig() *rest.Config { return rest.CopyConfig(c.rc) }

// Stop ends every bridge, then the API server and etcd (SIGTERM, SIGKILL after a
// grace period), waits for them, and removes the work directory if Start created
// it. It is safe to call more than once.
func (c *ControlPlane) Stop() error {
	c.mu.Lock()
	if c.stopped {
		c.mu.Unlock()
		return c.stopErr
	}
	c.stopped = true
	bridges := c.bridges
	c.bridges = map[int]func() error{}
	c.mu.Unlock()

	var errs []error
	for _, stop := range bridges {
		errs = append(errs, stop())
	}
	for _, p := range []*proc{c.apiserver, c.etcd} {
		if p != nil {
			errs = append(errs, p.stop(stopGrace))
		}
	}
	if c.sockDir != "" {
		errs = append(errs, os.RemoveAll(c.sockDir))
	}
	if c.tempDir {
		errs = append(errs, os.RemoveAll(c.dir))
	}
	c.mu.Lock()
	c.stopErr = errors.Join(errs...)
	c.mu.Unlock()
	return c.stopErr
}

// waitHTTP polls url until ok accepts the answer, the process exits, or ctx ends.
func waitHTTP(ctx context.Context, p *proc, url, token string, ok func(int, []byte) bool) error {
	hc := &http.Client{
		Timeout: 2 * time.Second,
		Transport: &http.Transport{
			Proxy:             nil,
			TLSClientConfig:   &tls.Config{InsecureSkipVerify: true},
			DisableKeepAlives: true,
		},
	}
	last := "no answer yet"
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		if resp, err := hc.Do(req); err != nil {
			last = err.Error()
		} else {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			if ok(resp.StatusCode, body) {
				return nil
			}
			last = fmt.Sprintf("HTTP %d: %s", resp.StatusCode, body)
		}
		select {
		case <-p.done:
			return p.exitError()
		case <-ctx.Done():
			return fmt.Errorf("%s not ready at %s (%v); last answer: %s; last lines of %s:\n%s",
				p.name, url, context.Cause(ctx), last, p.log, process.TailFile(p.log, 30))
		case <-tick.C:
		}
	}
}

// freePorts returns n distinct TCP ports free on 127.0.0.1 right now.
func freePorts(n int) ([]int, error) {
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
