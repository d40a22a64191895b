//! Device rules on cgroup v2, which has no devices controller: a
//! `BPF_PROG_TYPE_CGROUP_DEVICE` program, generated from the rules and
//! attached to the container's cgroup, answers each device access the
//! kernel checks (open, mknod). Rules keep v1's meaning: the last rule that
//! matches an access decides; with no match, the access is allowed (a
//! spec's list normally starts by denying everything).

use std::os::fd::AsRawFd;
use std::path::Path;

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

use crate::{Error, Result};

/// One eBPF instruction (struct bpf_insn).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub(crate) struct Insn {
    code: u8,
    regs: u8, // dst in the low nibble, src in the high one
    off: i16,
    imm: i32,
}

const LDX_MEM_W: u8 = 0x61;
const ALU64_AND_K: u8 = 0x57;
const ALU64_RSH_K: u8 = 0x77;
const ALU64_MOV_K: u8 = 0xb7;
const ALU64_MOV_X: u8 = 0xbf;
const JMP_JNE_K: u8 = 0x55;
const JMP_EXIT: u8 = 0x95;

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn { code, regs: (src << 4) | (dst & 0x0f), off, imm }
}

// bpf_cgroup_dev_ctx: u32 access_type (access << 16 | type), u32 major, u32 minor.
const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;
const ACC_MKNOD: i32 = 1;
const ACC_READ: i32 = 2;
const ACC_WRITE: i32 = 4;

fn access_bits(access: &str) -> i32 {
    access.chars().fold(0, |bits, c| {
        bits | match c {
            'r' => ACC_READ,
            'w' => ACC_WRITE,
            'm' => ACC_MKNOD,
            _ => 0,
        }
    })
}

/// The program for `rules`: r2 = type, r3 = access, r4 = major, r5 = minor;
/// then one block per rule, last rule first, each returning its verdict on
/// a match; then "allow".
pub(crate) fn program(rules: &[LinuxDeviceCgroup]) -> Vec<Insn> {
    let mut prog = vec![
        insn(LDX_MEM_W, 2, 1, 0, 0),
        insn(ALU64_AND_K, 2, 0, 0, 0xffff),
        insn(LDX_MEM_W, 3, 1, 0, 0),
        insn(ALU64_RSH_K, 3, 0, 0, 16),
        insn(LDX_MEM_W, 4, 1, 4, 0),
        insn(LDX_MEM_W, 5, 1, 8, 0),
    ];
    for rule in rules.iter().rev() {
        let typ = match rule.typ() {
            Some(LinuxDeviceType::B) => Some(DEV_BLOCK),
            Some(LinuxDeviceType::C | LinuxDeviceType::U) => Some(DEV_CHAR),
            Some(LinuxDeviceType::P) => continue, // fifos are not devices to the kernel's check
            Some(LinuxDeviceType::A) | None => None,
        };
        let rule_access = access_bits(rule.access().as_deref().unwrap_or("rwm"));
        // Each guard jumps to the next rule's block when the access does not match.
        let mut block = Vec::new();
        let mut guards = Vec::new();
        if let Some(t) = typ {
            guards.push(block.len());
            block.push(insn(JMP_JNE_K, 2, 0, 0, t));
        }
        // The access asked for must be within the rule's: (asked & !rule) == 0.
        block.push(insn(ALU64_MOV_X, 1, 3, 0, 0));
        block.push(insn(ALU64_AND_K, 1, 0, 0, !rule_access & 0x7));
        guards.push(block.len());
        block.push(insn(JMP_JNE_K, 1, 0, 0, 0));
        for (reg, value) in [(4u8, rule.major()), (5u8, rule.minor())] {
            if let Some(v) = value.filter(|v| *v >= 0) {
                guards.push(block.len());
                block.push(insn(JMP_JNE_K, reg, 0, 0, v as i32));
            }
        }
        block.push(insn(ALU64_MOV_K, 0, 0, 0, i32::from(rule.allow())));
        block.push(insn(JMP_EXIT, 0, 0, 0, 0));
        let len = block.len();
        for g in guards {
            block[g].off = (len - g - 1) as i16;
        }
        prog.extend(block);
    }
    prog.push(insn(ALU64_MOV_K, 0, 0, 0, 1));
    prog.push(insn(JMP_EXIT, 0, 0, 0, 0));
    prog
}

/// Loads the program for `rules` and attaches it to the cgroup v2 directory
/// `dir`, replacing the one attached before.
pub(crate) fn apply(dir: &Path, rules: &[LinuxDeviceCgroup]) -> Result<()> {
    let prog = program(rules);
    let fail = |op: &'static str| {
        let dir = dir.to_owned();
        move |errno| Error::Syscall { op, path: dir, errno }
    };
    let prog_fd = crate::sys::bpf_load_cgroup_device(&prog).map_err(fail("load the eBPF device program"))?;
    let cgroup = std::fs::File::open(dir).map_err(|source| Error::Read { path: dir.to_owned(), source })?;
    crate::sys::bpf_attach_cgroup_device(cgroup.as_raw_fd(), prog_fd.as_raw_fd())
        .map_err(fail("attach the eBPF device program"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(v: serde_json::Value) -> Vec<LinuxDeviceCgroup> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn every_jump_lands_inside_the_program_on_a_block_boundary_or_exit() {
        let prog = program(&rules(serde_json::json!([
            {"allow": false, "access": "rwm"},
            {"allow": true, "type": "c", "access": "m"},
            {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
            {"allow": true, "type": "c", "major": 136, "access": "rwm"}
        ])));
        for (i, ins) in prog.iter().enumerate() {
            if ins.code == JMP_JNE_K {
                let target = i as i64 + 1 + i64::from(ins.off);
                assert!(target < prog.len() as i64, "jump at {i} leaves the program");
                // A jump lands on the first instruction of a rule block or the final allow.
                let landing = prog[target as usize];
                assert!(
                    matches!(landing.code, JMP_JNE_K | ALU64_MOV_X | ALU64_MOV_K),
                    "jump at {i} lands on {landing:?}"
                );
            }
        }
        assert_eq!(prog.last().unwrap().code, JMP_EXIT);
    }
}
