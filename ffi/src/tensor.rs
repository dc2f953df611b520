//! Checking DLPack tensors before they become core buffers: dtype, rank, contiguity, offsets,
//! alignment, device, and that outputs overlap nothing else. Safe code only: the raw `DLTensor`
//! is read into a [`TensorDesc`] by `abi.rs`.

use moehal_core::tensor::MAX_RANK;
use moehal_core::{DType, Error, Result};

use crate::types::{dl_code, dl_device, DLDataType, DLDevice};

/// An owned copy of a `DLTensor`'s descriptor (no data).
#[derive(Debug, Clone, PartialEq)]
pub struct TensorDesc {
    /// `data` as an address.
    pub data: u64,
    /// Device.
    pub device: DLDevice,
    /// Element type.
    pub dtype: DLDataType,
    /// Extents (`ndim` of them).
    pub shape: Vec<i64>,
    /// Strides in elements, `None` when the tensor's `strides` is NULL.
    pub strides: Option<Vec<i64>>,
    /// Byte offset of element 0 from `data`.
    pub byte_offset: u64,
}

/// Which memory a tensor lives in, as the backends see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Space {
    /// CPU-addressable host memory.
    Host,
    /// Memory of a device (DLPack type and ordinal).
    Device(DLDevice),
}

/// A checked tensor: where its bytes are and how to view them.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapped {
    /// Argument name, for messages.
    pub field: &'static str,
    /// Address of element 0 (`data + byte_offset`); 0 only for an empty tensor with NULL data.
    pub addr: u64,
    /// Bytes spanned (`numel * element size`).
    pub bytes: usize,
    /// Element type.
    pub dtype: DType,
    /// Shape, outermost first.
    pub shape: Vec<usize>,
    /// Address space.
    pub space: Space,
}

/// Where a backend's memory lives, as a DLPack device plus whether it is host memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendSpace {
    /// The DLPack device of the backend's own memory.
    pub device: DLDevice,
    /// The backend's memory is host memory (reference, cpu).
    pub host: bool,
}

/// Map a DLPack dtype onto a core dtype; `kDLBool` (8-bit) is taken as `u8`.
pub fn dtype_of(op: &'static str, field: &'static str, t: DLDataType) -> Result<DType> {
    if t.lanes != 1 {
        return Err(Error::invalid(
            op,
            field,
            format!(
                "dtype lanes = {} (vector types are not supported; use lanes = 1)",
                t.lanes
            ),
        ));
    }
    let d = match (t.code, t.bits) {
        (dl_code::FLOAT, 32) => DType::F32,
        (dl_code::FLOAT, 16) => DType::F16,
        (dl_code::BFLOAT, 16) => DType::BF16,
        (dl_code::INT, 32) => DType::I32,
        (dl_code::INT, 64) => DType::I64,
        (dl_code::UINT, 8) | (dl_code::BOOL, 8) => DType::U8,
        (dl_code::INT, 8) => DType::I8,
        (c, b) => {
            return Err(Error::invalid(
                op,
                field,
                format!(
                    "DLPack dtype code {c} bits {b} is not one of float32, float16, bfloat16, int32, int64, uint8/bool, int8"
                ),
            ))
        }
    };
    Ok(d)
}

fn is_host_type(t: i32) -> bool {
    matches!(t, dl_device::CPU | dl_device::CUDA_HOST | dl_device::ROCM_HOST)
}

/// The address space of a tensor on `device` for a backend whose memory is `be`; `allow_host`
/// lets host tensors reach a device backend (Engram tables read in place).
pub fn space_of(
    op: &'static str,
    field: &'static str,
    device: DLDevice,
    be: BackendSpace,
    allow_host: bool,
) -> Result<Space> {
    if be.host {
        if is_host_type(device.device_type) {
            return Ok(Space::Host);
        }
        return Err(Error::invalid(
            op,
            field,
            format!(
                "tensor is on DLPack device (type {}, id {}) but this backend computes on host memory (kDLCPU)",
                device.device_type, device.device_id
            ),
        ));
    }
    let same_type = device.device_type == be.device.device_type
        || (be.device.device_type == dl_device::CUDA && device.device_type == dl_device::CUDA_MANAGED);
    if same_type && device.device_id == be.device.device_id {
        return Ok(Space::Device(device));
    }
    if allow_host && is_host_type(device.device_type) {
        return Ok(Space::Host);
    }
    Err(Error::invalid(
        op,
        field,
        format!(
            "tensor is on DLPack device (type {}, id {}) but this backend's device is (type {}, id {})",
            device.device_type, device.device_id, be.device.device_type, be.device.device_id
        ),
    ))
}

/// Check a tensor descriptor for argument `field` of `op` on a backend whose memory is `be`.
///
/// # Errors
/// [`Error::InvalidArgument`] naming `field`: rank above [`MAX_RANK`], negative extent, a dtype
/// moehal does not take, non-row-major strides, NULL data with elements, misalignment, size
/// overflow, or a device this backend cannot read.
pub fn check(
    op: &'static str,
    field: &'static str,
    d: &TensorDesc,
    be: BackendSpace,
    allow_host: bool,
) -> Result<Mapped> {
    if d.shape.len() > MAX_RANK {
        return Err(Error::invalid(
            op,
            field,
            format!(
                "ndim = {} exceeds the largest rank moehal takes ({MAX_RANK})",
                d.shape.len()
            ),
        ));
    }
    let dtype = dtype_of(op, field, d.dtype)?;
    let mut shape = Vec::with_capacity(d.shape.len());
    for (i, &s) in d.shape.iter().enumerate() {
        if s < 0 {
            return Err(Error::invalid(op, field, format!("shape[{i}] = {s} is negative")));
        }
        shape.push(s as usize);
    }
    let numel = shape
        .iter()
        .try_fold(1usize, |a, &s| a.checked_mul(s))
        .ok_or_else(|| Error::invalid(op, field, format!("shape {shape:?} overflows")))?;
    let bytes = numel
        .checked_mul(dtype.size())
        .ok_or_else(|| Error::invalid(op, field, format!("shape {shape:?} overflows")))?;
    if let Some(st) = &d.strides {
        if numel > 0 {
            let mut expect = 1i64;
            for i in (0..shape.len()).rev() {
                if shape[i] != 1 && st[i] != expect {
                    return Err(Error::invalid(
                        op,
                        field,
                        format!(
                            "strides {st:?} for shape {shape:?} are not row-major contiguous \
                             (make the tensor contiguous first)"
                        ),
                    ));
                }
                expect = expect.saturating_mul(shape[i] as i64);
            }
        }
    }
    let space = space_of(op, field, d.device, be, allow_host)?;
    let addr = d
        .data
        .checked_add(d.byte_offset)
        .ok_or_else(|| Error::invalid(op, field, "data + byte_offset overflows"))?;
    if numel > 0 {
        if d.data == 0 {
            return Err(Error::invalid(op, field, "data is NULL"));
        }
        if addr % dtype.size() as u64 != 0 {
            return Err(Error::invalid(
                op,
                field,
                format!(
                    "data + byte_offset = {addr:#x} is not aligned to the {}-byte elements of {dtype}",
                    dtype.size()
                ),
            ));
        }
        if addr.checked_add(bytes as u64).is_none() {
            return Err(Error::invalid(
                op,
                field,
                "tensor extends past the end of the address space",
            ));
        }
    }
    Ok(Mapped {
        field,
        addr,
        bytes,
        dtype,
        shape,
        space,
    })
}

fn overlaps(a: &Mapped, b: &Mapped) -> bool {
    a.space == b.space
        && a.bytes > 0
        && b.bytes > 0
        && a.addr < b.addr + b.bytes as u64
        && b.addr < a.addr + a.bytes as u64
}

/// Outputs must not overlap any input or any other output (core gives each op exclusive outputs).
///
/// # Errors
/// [`Error::InvalidArgument`] naming the output.
pub fn check_no_overlap(op: &'static str, inputs: &[&Mapped], outputs: &[&Mapped]) -> Result<()> {
    for (i, o) in outputs.iter().enumerate() {
        let others = inputs.iter().chain(outputs[i + 1..].iter());
        if let Some(x) = others.into_iter().find(|x| overlaps(o, x)) {
            return Err(Error::invalid(
                op,
                o.field,
                format!(
                    "output `{}` overlaps `{}` in memory ({} {:?} at bytes {:#x}..{:#x}; {} {:?} at {:#x}..{:#x}): \
                     outputs must be exclusive, so use separate tensors (a shape larger than the buffer behind \
                     it also reaches into its neighbour)",
                    o.field,
                    x.field,
                    o.dtype,
                    o.shape,
                    o.addr,
                    o.addr + o.bytes as u64,
                    x.dtype,
                    x.shape,
                    x.addr,
                    x.addr + x.bytes as u64
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(shape: &[i64], strides: Option<Vec<i64>>) -> TensorDesc {
        TensorDesc {
            data: 0x1000,
            device: DLDevice {
                device_type: dl_device::CPU,
                device_id: 0,
            },
            dtype: DLDataType {
                code: dl_code::FLOAT,
                bits: 32,
                lanes: 1,
            },
            shape: shape.to_vec(),
            strides,
            byte_offset: 0,
        }
    }
    const HOST: BackendSpace = BackendSpace {
        device: DLDevice {
            device_type: dl_device::CPU,
            device_id: 0,
        },
        host: true,
    };

    /// Fresh-user report (session 9): a wrong `ids` shape over a 4-element array was reported only
    /// as an overlap with `logits`; the message now gives both tensors' shapes and byte ranges, so
    /// an oversized shape shows as the cause.
    #[test]
    fn an_overlap_names_both_tensors_shapes_and_bytes() {
        let m = |field, addr, shape: Vec<usize>| Mapped {
            field,
            addr,
            bytes: shape.iter().product::<usize>() * 4,
            dtype: DType::I32,
            shape,
            space: Space::Host,
        };
        let logits = m("logits", 0x1010, vec![2, 4]);
        let ids = m("ids", 0x1000, vec![2, 3]);
        let e = check_no_overlap("router_topk", &[&logits], &[&ids])
            .unwrap_err()
            .to_string();
        assert!(e.contains("`ids` overlaps `logits`"), "{e}");
        assert!(e.contains("i32 [2, 3] at bytes 0x1000..0x1018"), "{e}");
        assert!(e.contains("i32 [2, 4] at 0x1010..0x1030"), "{e}");
        let apart = m("ids", 0x1030, vec![2, 3]);
        assert!(check_no_overlap("router_topk", &[&logits], &[&apart]).is_ok());
    }

    #[test]
    fn contiguity_rules() {
        assert!(check("op", "x", &desc(&[2, 3], None), HOST, false).is_ok());
        assert!(check("op", "x", &desc(&[2, 3], Some(vec![3, 1])), HOST, false).is_ok());
        // A size-1 dimension may carry any stride (torch does this).
        assert!(check("op", "x", &desc(&[1, 3], Some(vec![99, 1])), HOST, false).is_ok());
        assert!(check("op", "x", &desc(&[2, 3], Some(vec![1, 2])), HOST, false).is_err());
        assert!(check("op", "x", &desc(&[2, 3], Some(vec![4, 1])), HOST, false).is_err());
        assert!(check("op", "x", &desc(&[1, 1, 1, 1, 1], None), HOST, false).is_err());
        assert!(check("op", "x", &desc(&[-1], None), HOST, false).is_err());
    }

    #[test]
    fn devices_and_alignment() {
        let mut d = desc(&[4], None);
        d.device.device_type = dl_device::CUDA;
        let e = check("op", "x", &d, HOST, false).unwrap_err().to_string();
        assert!(e.contains("host memory"), "{e}");
        let cuda = BackendSpace {
            device: DLDevice {
                device_type: dl_device::CUDA,
                device_id: 1,
            },
            host: false,
        };
        d.device.device_id = 0;
        assert!(check("op", "x", &d, cuda, false).is_err());
        d.device.device_id = 1;
        assert_eq!(
            check("op", "x", &d, cuda, false).unwrap().space,
            Space::Device(d.device)
        );
        let h = desc(&[4], None);
        assert!(check("op", "x", &h, cuda, false).is_err());
        assert_eq!(check("op", "x", &h, cuda, true).unwrap().space, Space::Host);
        let mut m = desc(&[4], None);
        m.byte_offset = 2;
        assert!(check("op", "x", &m, HOST, false).is_err());
        m.byte_offset = 8;
        assert_eq!(check("op", "x", &m, HOST, false).unwrap().addr, 0x1008);
    }

    #[test]
    fn overlap() {
        let a = check("op", "a", &desc(&[4], None), HOST, false).unwrap();
        let mut bd = desc(&[4], None);
        bd.byte_offset = 16;
        let b = check("op", "b", &bd, HOST, false).unwrap();
        bd.byte_offset = 12;
        let c = check("op", "c", &bd, HOST, false).unwrap();
        assert!(check_no_overlap("op", &[&a], &[&b]).is_ok());
        assert!(check_no_overlap("op", &[&a], &[&c]).is_err());
        assert!(check_no_overlap("op", &[], &[&b, &c]).is_err());
        // Inputs may share memory.
        assert!(check_no_overlap("op", &[&a, &a], &[&b]).is_ok());
    }
}
