//! The worker's seccomp filter (the `seccompiler` crate, from Firecracker): system calls no
//! plugin needs and that reach other processes or the kernel's global state return `EPERM`;
//! everything else is allowed (Landlock and rlimits bound the rest).

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use super::{Mechanism, Net, Policy, SandboxError};

/// Refused with `EPERM`, whatever their arguments.
const DENIED: &[libc::c_long] = &[
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_pidfd_getfd,
    libc::SYS_kcmp,
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_chroot,
    libc::SYS_fsopen,
    libc::SYS_fsmount,
    libc::SYS_fsconfig,
    libc::SYS_move_mount,
    libc::SYS_open_tree,
    libc::SYS_bpf,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_perf_event_open,
    libc::SYS_kexec_load,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_reboot,
    libc::SYS_setns,
    libc::SYS_unshare,
    libc::SYS_userfaultfd,
    libc::SYS_open_by_handle_at,
    libc::SYS_name_to_handle_at,
    libc::SYS_acct,
    libc::SYS_quotactl,
    libc::SYS_settimeofday,
    libc::SYS_clock_settime,
    libc::SYS_clock_adjtime,
    libc::SYS_adjtimex,
    libc::SYS_syslog,
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    libc::SYS_fanotify_init,
    libc::SYS_vhangup,
];

/// `clone` flags that make new namespaces: refused (a plugin may not leave its sandbox's view).
const NAMESPACE_FLAGS: &[u64] = &[
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWCGROUP as u64,
];

/// Whether this kernel has seccomp filters (`Seccomp:` in `/proc/self/status`).
pub fn available() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .is_ok_and(|s| s.lines().any(|l| l.starts_with("Seccomp:")))
}

fn setup(detail: impl ToString) -> SandboxError {
    SandboxError::Setup {
        mechanism: Mechanism::Seccomp,
        detail: detail.to_string(),
    }
}

fn arch() -> Result<TargetArch, SandboxError> {
    TargetArch::try_from(std::env::consts::ARCH).map_err(setup)
}

/// The obsolete `SOCK_PACKET` type (libc deprecates its name): on an IPv4 socket the kernel
/// makes it a packet socket.
const SOCK_PACKET: u64 = 10;

/// `socket(domain, type, protocol)` rules. An allow-list of families: IPv4 and IPv6 (which
/// Landlock filters), netlink's routing protocol (the C library's `getaddrinfo` reads the
/// interfaces' addresses through it) and, when the network is `any`, unix sockets (a named one
/// such as a container engine's could be reached: Landlock does not filter connecting to them
/// on this ABI); every other family (packet, vsock, SMC, RDS, TIPC, crypto, other netlink
/// protocols…) is refused. Of IPv4 and IPv6: nothing when no network is granted; with ports
/// granted only TCP streams (Landlock filters TCP only), and UDP when `dns` is granted (name
/// resolution; see [`super::net`]); `SOCK_PACKET` never.
fn socket_rules(net: &Net, dns: bool) -> Result<Vec<SeccompRule>, SandboxError> {
    let condition = |arg: u8, op: SeccompCmpOp, value: u64| {
        SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value).map_err(setup)
    };
    let rule = |conditions: Vec<SeccompCondition>| SeccompRule::new(conditions).map_err(setup);
    let mut families = vec![libc::AF_INET, libc::AF_INET6, libc::AF_NETLINK];
    if *net == Net::Any {
        families.push(libc::AF_UNIX);
    }
    let mut rules = vec![
        // A family not in the list (every condition of a rule must hold).
        rule(
            families
                .iter()
                .map(|&family| condition(0, SeccompCmpOp::Ne, family as u64))
                .collect::<Result<_, _>>()?,
        )?,
        rule(vec![
            condition(0, SeccompCmpOp::Eq, libc::AF_NETLINK as u64)?,
            condition(2, SeccompCmpOp::Ne, libc::NETLINK_ROUTE as u64)?,
        ])?,
    ];
    for domain in [libc::AF_INET, libc::AF_INET6] {
        let domain = condition(0, SeccompCmpOp::Eq, domain as u64)?;
        match net {
            Net::None => rules.push(rule(vec![domain])?),
            Net::Any => rules.push(rule(vec![
                domain,
                condition(1, SeccompCmpOp::MaskedEq(0xf), SOCK_PACKET)?,
            ])?),
            Net::Ports(_) => {
                // The type's low four bits (the rest are SOCK_NONBLOCK and SOCK_CLOEXEC).
                let allowed =
                    |k: u64| k == libc::SOCK_STREAM as u64 || (dns && k == libc::SOCK_DGRAM as u64);
                for kind in (0..16u64).filter(|&k| !allowed(k)) {
                    rules.push(rule(vec![
                        domain.clone(),
                        condition(1, SeccompCmpOp::MaskedEq(0xf), kind)?,
                    ])?);
                }
                // Another protocol than TCP or UDP (SCTP, MPTCP, UDP-Lite, SMC…); UDP's type
                // is refused above unless `dns`.
                rules.push(rule(vec![
                    domain,
                    condition(2, SeccompCmpOp::Ne, 0)?,
                    condition(2, SeccompCmpOp::Ne, libc::IPPROTO_TCP as u64)?,
                    condition(2, SeccompCmpOp::Ne, libc::IPPROTO_UDP as u64)?,
                ])?);
            }
        }
    }
    Ok(rules)
}

/// The deny filter: the calls above, `clone` with a namespace flag, and the sockets
/// [`socket_rules`] names.
fn deny_filter(net: &Net, dns: bool) -> Result<BpfProgram, SandboxError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        DENIED.iter().map(|&call| (call, Vec::new())).collect();
    let clone_rules = NAMESPACE_FLAGS
        .iter()
        .map(|&flag| {
            SeccompCondition::new(
                0,
                SeccompCmpArgLen::Qword,
                SeccompCmpOp::MaskedEq(flag),
                flag,
            )
            .and_then(|c| SeccompRule::new(vec![c]))
            .map_err(setup)
        })
        .collect::<Result<Vec<_>, _>>()?;
    rules.insert(libc::SYS_clone, clone_rules);
    rules.insert(libc::SYS_socket, socket_rules(net, dns)?);
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch()?,
    )
    .map_err(setup)?;
    BpfProgram::try_from(filter).map_err(setup)
}

/// `clone3` passes its flags in memory, where a filter cannot read them: it answers `ENOSYS`,
/// and the C library falls back to `clone`, whose flags the deny filter reads.
fn clone3_filter() -> Result<BpfProgram, SandboxError> {
    let rules = BTreeMap::from([(libc::SYS_clone3, Vec::new())]);
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch()?,
    )
    .map_err(setup)?;
    BpfProgram::try_from(filter).map_err(setup)
}

/// Installs the filters on every thread of this process (there is one when the worker calls
/// this) and on everything it starts.
///
/// # Errors
///
/// When the kernel refuses them (unless the policy accepts a weaker sandbox).
pub fn install(policy: &Policy) -> Result<(), SandboxError> {
    let result = (|| {
        seccompiler::apply_filter_all_threads(&clone3_filter()?).map_err(setup)?;
        seccompiler::apply_filter_all_threads(&deny_filter(&policy.net, policy.dns)?).map_err(setup)
    })();
    match result {
        Err(_) if policy.accept_weaker && !available() => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::Net;

    #[test]
    fn the_filters_compile_for_this_architecture() {
        for net in [Net::None, Net::Ports(vec![80]), Net::Any] {
            for dns in [false, true] {
                assert!(super::deny_filter(&net, dns).is_ok());
            }
        }
        assert!(super::clone3_filter().is_ok());
    }
}
