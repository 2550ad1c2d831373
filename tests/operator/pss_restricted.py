"""The Kubernetes Pod Security Standards, "restricted" profile, as explicit checks.

Each rule of https://kubernetes.io/docs/concepts/security/pod-security-standards/
(baseline + restricted, as of v1.31) is one function over a pod spec; each
returns the violations it found. `violations(pod_spec)` runs them all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

PodSpec = dict[str, Any]

BASELINE_CAPABILITIES = {
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
    "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
}  # fmt: skip
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}  # fmt: skip
RESTRICTED_VOLUME_TYPES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
    "projected", "secret",
}  # fmt: skip
SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}


def _containers(spec: PodSpec) -> Iterator[tuple[str, dict[str, Any]]]:
    for field in ("initContainers", "containers", "ephemeralContainers"):
        for container in spec.get(field) or ():
            yield f"{field}[{container.get('name')}]", container


def host_namespaces(spec: PodSpec) -> list[str]:
    return [f"{f} must not be true" for f in ("hostNetwork", "hostPID", "hostIPC") if spec.get(f)]


def host_process(spec: PodSpec) -> list[str]:
    found = []
    if (spec.get("securityContext") or {}).get("windowsOptions", {}).get("hostProcess"):
        found.append("pod windowsOptions.hostProcess must not be true")
    for where, c in _containers(spec):
        if (c.get("securityContext") or {}).get("windowsOptions", {}).get("hostProcess"):
            found.append(f"{where} windowsOptions.hostProcess must not be true")
    return found


def privileged(spec: PodSpec) -> list[str]:
    return [
        f"{w} must not be privileged"
        for w, c in _containers(spec)
        if (c.get("securityContext") or {}).get("privileged")
    ]


def host_ports(spec: PodSpec) -> list[str]:
    return [
        f"{w} hostPort {p['hostPort']} is not allowed"
        for w, c in _containers(spec)
        for p in c.get("ports") or ()
        if p.get("hostPort")
    ]


def apparmor(spec: PodSpec) -> list[str]:
    found = []
    contexts = [("pod", spec.get("securityContext") or {})]
    contexts += [(w, c.get("securityContext") or {}) for w, c in _containers(spec)]
    for where, ctx in contexts:
        profile = (ctx.get("appArmorProfile") or {}).get("type")
        if profile not in (None, "RuntimeDefault", "Localhost"):
            found.append(f"{where} appArmorProfile {profile} is not allowed")
    return found


def selinux(spec: PodSpec) -> list[str]:
    found = []
    contexts = [("pod", spec.get("securityContext") or {})]
    contexts += [(w, c.get("securityContext") or {}) for w, c in _containers(spec)]
    for where, ctx in contexts:
        options = ctx.get("seLinuxOptions") or {}
        if options.get("type", "") not in SELINUX_TYPES:
            found.append(f"{where} seLinuxOptions.type {options['type']} is not allowed")
        for forbidden in ("user", "role"):
            if options.get(forbidden):
                found.append(f"{where} seLinuxOptions.{forbidden} must not be set")
    return found


def proc_mount(spec: PodSpec) -> list[str]:
    return [
        f"{w} procMount must be Default"
        for w, c in _containers(spec)
        if (c.get("securityContext") or {}).get("procMount", "Default") != "Default"
    ]


def sysctls(spec: PodSpec) -> list[str]:
    return [
        f"sysctl {s['name']} is not in the safe set"
        for s in (spec.get("securityContext") or {}).get("sysctls") or ()
        if s.get("name") not in SAFE_SYSCTLS
    ]


def volume_types(spec: PodSpec) -> list[str]:
    found = []
    for volume in spec.get("volumes") or ():
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUME_TYPES:
            found.append(f"volume {volume.get('name')} uses {sorted(kinds)}")
    return found


def privilege_escalation(spec: PodSpec) -> list[str]:
    return [
        f"{w} must set allowPrivilegeEscalation: false"
        for w, c in _containers(spec)
        if (c.get("securityContext") or {}).get("allowPrivilegeEscalation") is not False
    ]


def run_as_non_root(spec: PodSpec) -> list[str]:
    pod_ctx = spec.get("securityContext") or {}
    found = []
    for w, c in _containers(spec):
        ctx = c.get("securityContext") or {}
        value = ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot"))
        if value is not True:
            found.append(f"{w} must run with runAsNonRoot: true")
    return found


def run_as_user(spec: PodSpec) -> list[str]:
    found = []
    if (spec.get("securityContext") or {}).get("runAsUser") == 0:
        found.append("pod runAsUser must not be 0")
    for w, c in _containers(spec):
        if (c.get("securityContext") or {}).get("runAsUser") == 0:
            found.append(f"{w} runAsUser must not be 0")
    return found


def seccomp(spec: PodSpec) -> list[str]:
    pod_profile = ((spec.get("securityContext") or {}).get("seccompProfile") or {}).get("type")
    found = []
    if pod_profile not in (None, "RuntimeDefault", "Localhost"):
        found.append(f"pod seccompProfile {pod_profile} is not allowed")
    for w, c in _containers(spec):
        profile = ((c.get("securityContext") or {}).get("seccompProfile") or {}).get("type")
        effective = profile or pod_profile
        if effective not in ("RuntimeDefault", "Localhost"):
            found.append(f"{w} needs seccompProfile RuntimeDefault or Localhost")
    return found


def capabilities(spec: PodSpec) -> list[str]:
    found = []
    for w, c in _containers(spec):
        caps = (c.get("securityContext") or {}).get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or ()):
            found.append(f"{w} must drop ALL capabilities")
        added = set(caps.get("add") or ()) - {"NET_BIND_SERVICE"}
        if added:
            found.append(f"{w} may add only NET_BIND_SERVICE, not {sorted(added)}")
    return found


RULES: tuple[Callable[[PodSpec], list[str]], ...] = (
    host_process,
    host_namespaces,
    privileged,
    capabilities,
    volume_types,
    host_ports,
    apparmor,
    selinux,
    proc_mount,
    seccomp,
    sysctls,
    privilege_escalation,
    run_as_non_root,
    run_as_user,
)


def violations(spec: PodSpec) -> list[str]:
    return [v for rule in RULES for v in rule(spec)]
