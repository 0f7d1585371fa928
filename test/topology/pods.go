package topology

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// wirePods connects every pod to its node, Calico style (see the package doc).
func (t *Topology) wirePods(ctx context.Context) error {
	for i := range t.Scenario.Pods {
		if err := t.wirePod(ctx, i); err != nil {
			return err
		}
	}
	return nil
}

func (t *Topology) wirePod(ctx context.Context, i int) error {
	pod, nodeNS, hostIf := t.Scenario.Pods[i], t.podHostNS(i), t.PodHostIface(t.Scenario.Pods[i].Name)
	podNS := t.PodNS(pod.Name)
	// A fixed MAC on the host side lets the pod have a permanent neighbour entry for its gateway, so
	// nothing depends on proxy ARP or on the node's routes.
	if err := ipAll(ctx, nodeNS,
		[]string{"link", "add", hostIf, "address", hostVethMAC, "type", "veth", "peer", "name", ifInside, "netns", podNS},
		[]string{"link", "set", hostIf, "up"},
	); err != nil {
		return err
	}
	cmds := [][]string{{"link", "set", ifInside, "up"}}
	var hostCmds [][]string
	for _, a := range t.plan.pods[i] {
		cmds = append(cmds, addrAdd(host(a), ifInside))
		hostCmds = append(hostCmds, []string{"route", "add", host(a).String(), "dev", hostIf})
		if a.Is4() {
			cmds = append(cmds,
				[]string{"route", "add", podGateway4, "dev", ifInside, "scope", "link"},
				[]string{"route", "add", "default", "via", podGateway4, "dev", ifInside},
				[]string{"neigh", "add", podGateway4, "lladdr", hostVethMAC, "dev", ifInside, "nud", "permanent"})
		} else {
			hostCmds = append(hostCmds, addrAdd(netip.MustParsePrefix(podGateway6+"/64"), hostIf))
			cmds = append(cmds, []string{"route", "add", "default", "via", podGateway6, "dev", ifInside})
		}
	}
	// The host side first: the pod's IPv6 default route needs fe80::1 to exist.
	if err := ipAll(ctx, nodeNS, hostCmds...); err != nil {
		return err
	}
	return ipAll(ctx, podNS, cmds...)
}

// startServers runs the echo server of every pod that has ports and waits until it listens.
func (t *Topology) startServers(ctx context.Context) error {
	for _, pod := range t.Scenario.Pods {
		if len(pod.Ports) == 0 {
			continue
		}
		if err := t.startServer(ctx, pod); err != nil {
			return fmt.Errorf("pod %s: %w", pod.Name, err)
		}
	}
	return nil
}

func (t *Topology) startServer(ctx context.Context, pod Pod) error {
	cmd, err := t.StartEcho(ctx, t.PodNS(pod.Name), pod.Ports)
	if err != nil {
		return err
	}
	t.mu.Lock()
	t.servers[pod.Name] = append(t.servers[pod.Name], cmd)
	t.mu.Unlock()
	return nil
}

// echoFlags are the echo server's flags by port protocol.
var echoFlags = map[string]string{"TCP": "-tcp", "UDP": "-udp", ProtocolTCPRequestReply: "-tcp-rr",
	ProtocolTCPCloseAfterReply: "-tcp-close"}

func echoArgs(ports []Port) []string {
	byFlag := map[string][]string{}
	for _, p := range ports {
		flag := echoFlags[p.Protocol]
		byFlag[flag] = append(byFlag[flag], strconv.Itoa(p.Port))
	}
	var args []string
	for _, flag := range []string{"-tcp", "-udp", "-tcp-rr", "-tcp-close"} {
		if len(byFlag[flag]) > 0 {
			args = append(args, flag, strings.Join(byFlag[flag], ","))
		}
	}
	return args
}

// StartEcho starts the echo server inside ns on ports and returns once it accepts
// traffic on all of them. Close kills it; kill and Wait it yourself to stop it sooner.
func (t *Topology) StartEcho(ctx context.Context, ns string, ports []Port) (*exec.Cmd, error) {
	args := echoArgs(ports)
	cmd := t.Command(ns, t.Scenario.EchoBin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("echo stdout: %w", err)
	}
	if err := t.Start(cmd); err != nil {
		return nil, err
	}
	ready := make(chan error, 1)
	go func() {
		line, err := bufio.NewReader(out).ReadString('\n')
		if err == nil && strings.TrimSpace(line) != "ready" {
			err = fmt.Errorf("unexpected first line %q", line)
		}
		ready <- err
	}()
	select {
	case err = <-ready:
	case <-time.After(10 * time.Second):
		err = fmt.Errorf("not ready after 10s")
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err != nil {
		// Kill before reading stderr, so the buffer is complete and no longer written to.
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, fmt.Errorf("echo server %s %s: %w: %s", t.Scenario.EchoBin, strings.Join(args, " "), err,
			strings.TrimSpace(stderr.String()))
	}
	return cmd, nil
}
