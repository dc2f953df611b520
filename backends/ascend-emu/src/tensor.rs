//! Host copies of aclTensor descriptors and their bytes, and element conversions.

use half::{bf16, f16};

use crate::sys;

/// Bytes per element of an ACL data type this emulator handles, or `None`.
pub fn elem_size(dt: sys::aclDataType) -> Option<usize> {
    Some(match dt {
        sys::ACL_FLOAT | sys::ACL_INT32 | sys::ACL_UINT32 => 4,
        sys::ACL_FLOAT16 | sys::ACL_BF16 | sys::ACL_INT16 | sys::ACL_UINT16 => 2,
        sys::ACL_INT64 | sys::ACL_UINT64 | sys::ACL_DOUBLE => 8,
        sys::ACL_INT8 | sys::ACL_UINT8 | sys::ACL_BOOL => 1,
        _ => return None,
    })
}

/// Name of a data type for messages.
pub fn dt_name(dt: sys::aclDataType) -> &'static str {
    match dt {
        sys::ACL_FLOAT => "FLOAT",
        sys::ACL_FLOAT16 => "FLOAT16",
        sys::ACL_BF16 => "BF16",
        sys::ACL_INT32 => "INT32",
        sys::ACL_INT64 => "INT64",
        sys::ACL_INT8 => "INT8",
        sys::ACL_UINT8 => "UINT8",
        sys::ACL_BOOL => "BOOL",
        sys::ACL_DOUBLE => "DOUBLE",
        _ => "OTHER",
    }
}

/// An aclTensor as created by `aclCreateTensor` (all counts in elements).
///
/// View model (\[HA canncommercial/81RC1 and 900 operatorlist_00019 aclCreateTensor\]): `storage` is
/// the physical shape of the buffer that starts at the device address `data`; the view's element
/// `idx` lives at storage element `offset + sum(idx[d] * strides[d])`, i.e. at byte address
/// `data + (offset + ...) * elem_size`. So a row slice is "aligned base + element offset".
#[derive(Clone, Debug)]
pub struct Desc {
    /// View shape (non-negative).
    pub dims: Vec<i64>,
    /// View strides in elements (non-negative).
    pub strides: Vec<i64>,
    /// Element offset of the view start from `data` ("首元素相对于storage的偏移", non-negative).
    pub offset: i64,
    /// Element type.
    pub dtype: sys::aclDataType,
    /// Data layout format (`ACL_FORMAT_ND` = 2 for every op this emulator runs).
    pub format: sys::aclFormat,
    /// Storage shape (non-negative).
    pub storage: Vec<i64>,
    /// Device address of the storage start (must be 32-byte aligned).
    pub data: usize,
}

impl Desc {
    /// Number of view elements.
    pub fn numel(&self) -> i64 {
        self.dims.iter().product()
    }
    /// Storage size in elements.
    pub fn storage_len(&self) -> i64 {
        self.storage.iter().product()
    }
    /// Whether the view is row-major contiguous.
    pub fn contiguous(&self) -> bool {
        let mut expect = 1i64;
        for (d, s) in self.dims.iter().zip(&self.strides).rev() {
            if *d != 1 && *s != expect {
                return false;
            }
            expect *= d;
        }
        true
    }
    /// Element position (in storage) of a multi-index.
    pub fn pos(&self, idx: &[i64]) -> i64 {
        self.offset + idx.iter().zip(&self.strides).map(|(i, s)| i * s).sum::<i64>()
    }
    /// Short description for messages.
    pub fn show(&self) -> String {
        format!("{}{:?}", dt_name(self.dtype), self.dims)
    }
}

/// A tensor's storage bytes copied to the host at launch; outputs are copied back afterwards.
pub struct HostTensor {
    /// The descriptor.
    pub d: Desc,
    /// `storage_len * elem_size` bytes.
    pub bytes: Vec<u8>,
}

impl HostTensor {
    fn esz(&self) -> usize {
        elem_size(self.d.dtype).unwrap_or(1)
    }
    /// Read the element at storage position `p` as f32 (floating types) or converted integer.
    pub fn get_pos(&self, p: i64) -> f64 {
        let e = self.esz();
        let o = p as usize * e;
        let b = &self.bytes[o..o + e];
        match self.d.dtype {
            sys::ACL_FLOAT => f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64,
            sys::ACL_FLOAT16 => f16::from_le_bytes([b[0], b[1]]).to_f64(),
            sys::ACL_BF16 => bf16::from_le_bytes([b[0], b[1]]).to_f64(),
            sys::ACL_INT32 => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64,
            sys::ACL_INT64 => i64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as f64,
            sys::ACL_DOUBLE => f64::from_le_bytes(b.try_into().unwrap_or([0; 8])),
            sys::ACL_INT8 => b[0] as i8 as f64,
            sys::ACL_UINT8 | sys::ACL_BOOL => b[0] as f64,
            _ => f64::NAN,
        }
    }
    /// Read an integer element at storage position `p`.
    pub fn get_int_pos(&self, p: i64) -> i64 {
        let e = self.esz();
        let o = p as usize * e;
        let b = &self.bytes[o..o + e];
        match self.d.dtype {
            sys::ACL_INT64 => i64::from_le_bytes(b.try_into().unwrap_or([0; 8])),
            sys::ACL_INT32 => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64,
            _ => self.get_pos(p) as i64,
        }
    }
    /// Element at a multi-index, as f32 arithmetic value.
    pub fn get(&self, idx: &[i64]) -> f32 {
        self.get_pos(self.d.pos(idx)) as f32
    }
    /// Integer element at a multi-index.
    pub fn get_int(&self, idx: &[i64]) -> i64 {
        self.get_int_pos(self.d.pos(idx))
    }
    /// Raw bytes of the element at storage position `p`.
    pub fn raw(&self, p: i64) -> &[u8] {
        let e = self.esz();
        &self.bytes[p as usize * e..(p as usize + 1) * e]
    }
    /// Store raw bytes at storage position `p`.
    pub fn set_raw(&mut self, p: i64, v: &[u8]) {
        let e = self.esz();
        self.bytes[p as usize * e..(p as usize + 1) * e].copy_from_slice(v);
    }
    /// Store a value (rounded once, to nearest even, into the tensor's type) at storage position `p`.
    pub fn set_pos(&mut self, p: i64, v: f64) {
        let e = self.esz();
        let o = p as usize * e;
        let b = &mut self.bytes[o..o + e];
        match self.d.dtype {
            sys::ACL_FLOAT => b.copy_from_slice(&(v as f32).to_le_bytes()),
            sys::ACL_FLOAT16 => b.copy_from_slice(&f16::from_f64(v).to_le_bytes()),
            sys::ACL_BF16 => b.copy_from_slice(&bf16::from_f64(v).to_le_bytes()),
            sys::ACL_INT32 => b.copy_from_slice(&(v as i32).to_le_bytes()),
            sys::ACL_INT64 => b.copy_from_slice(&(v as i64).to_le_bytes()),
            sys::ACL_DOUBLE => b.copy_from_slice(&v.to_le_bytes()),
            sys::ACL_INT8 => b[0] = v as i8 as u8,
            sys::ACL_UINT8 => b[0] = v as u8,
            sys::ACL_BOOL => b[0] = (v != 0.0) as u8,
            _ => {}
        }
    }
    /// Store an f32 value at a multi-index (f32 -> f16/bf16 rounds to nearest even).
    pub fn set(&mut self, idx: &[i64], v: f32) {
        let p = self.d.pos(idx);
        match self.d.dtype {
            sys::ACL_FLOAT16 => self.set_raw(p, &f16::from_f32(v).to_le_bytes()),
            sys::ACL_BF16 => self.set_raw(p, &bf16::from_f32(v).to_le_bytes()),
            _ => self.set_pos(p, v as f64),
        }
    }
    /// Store an integer at a multi-index.
    pub fn set_int(&mut self, idx: &[i64], v: i64) {
        let p = self.d.pos(idx);
        match self.d.dtype {
            sys::ACL_INT64 => self.set_raw(p, &v.to_le_bytes()),
            sys::ACL_INT32 => self.set_raw(p, &(v as i32).to_le_bytes()),
            _ => self.set_pos(p, v as f64),
        }
    }
}
