//! [`HcclComm`]: the [`Comm`] collectives over Huawei HCCL, loaded at run time (feature `hccl`).
//!
//! `libhccl.so` and the ACL runtime (`libascendcl.so`) are opened with libloading from the
//! directories the Ascend backend searches ([`moehal_ascend::search_dirs`]: `MOEHAL_ASCEND_LIB_DIR`
//! when it names a directory, then `ASCEND_HOME_PATH` / `ASCEND_TOOLKIT_HOME`, `LD_LIBRARY_PATH`,
//! the default toolkit paths); a missing library or symbol is [`Error::Unavailable`] with the
//! names, and a `MOEHAL_ASCEND_LIB_DIR` that is a file or missing is said to be that, in the
//! Ascend loader's words ([`moehal_ascend::lib_dir_problem`], [`moehal_ascend::not_found_hint`]). Entry points, from CANN's `hccl.h` / `hccl_types.h`:
//! `HcclGetRootInfo(HcclRootInfo*)` (4108 bytes), `HcclCommInitRootInfo(nRanks, rootInfo, rank,
//! HcclComm*)`, `HcclAlltoAllV(sendBuf, sendCounts, sdispls, sendType, recvBuf, recvCounts,
//! rdispls, recvType, comm, stream)` with `uint64` counts and displacements, `HcclCommDestroy`.
//! Buffers are staged through device memory (`aclrtMalloc`, `aclrtMemcpy`) on one stream.
//!
//! Not yet run on a device or an emulator (docs/EP.md §2): the emulator has no HCCL.

use std::ffi::c_void;
use std::path::PathBuf;
use std::sync::Mutex;

use libloading::Library;
use moehal_core::{Error, Result};

use crate::comm::{check_v, displs, Comm};

/// `HCCL_ROOT_INFO_BYTES` of `hccl_types.h`.
pub const ROOT_INFO_BYTES: usize = 4108;
/// `HCCL_DATA_TYPE_UINT8` of `hccl_types.h`.
const HCCL_DATA_TYPE_UINT8: i32 = 7;
/// `ACL_MEMCPY_HOST_TO_DEVICE` / `ACL_MEMCPY_DEVICE_TO_HOST` of `acl_rt.h`.
const ACL_MEMCPY_HOST_TO_DEVICE: i32 = 1;
const ACL_MEMCPY_DEVICE_TO_HOST: i32 = 2;
/// `ACL_MEM_MALLOC_HUGE_FIRST`.
const ACL_MEM_MALLOC_HUGE_FIRST: i32 = 0;
/// `ACL_ERROR_REPEAT_INITIALIZE`: `aclInit` called twice in a process (not a failure here).
const ACL_ERROR_REPEAT_INITIALIZE: i32 = 100_002;

type HcclGetRootInfo = unsafe extern "C" fn(*mut u8) -> i32;
type HcclCommInitRootInfo = unsafe extern "C" fn(u32, *const u8, u32, *mut *mut c_void) -> i32;
type HcclAlltoAllV = unsafe extern "C" fn(
    *const c_void,
    *const c_void,
    *const c_void,
    i32,
    *const c_void,
    *const c_void,
    *const c_void,
    i32,
    *mut c_void,
    *mut c_void,
) -> i32;
type HcclCommDestroy = unsafe extern "C" fn(*mut c_void) -> i32;
type AclInit = unsafe extern "C" fn(*const std::ffi::c_char) -> i32;
type AclrtSetDevice = unsafe extern "C" fn(i32) -> i32;
type AclrtCreateStream = unsafe extern "C" fn(*mut *mut c_void) -> i32;
type AclrtDestroyStream = unsafe extern "C" fn(*mut c_void) -> i32;
type AclrtSynchronizeStream = unsafe extern "C" fn(*mut c_void) -> i32;
type AclrtMalloc = unsafe extern "C" fn(*mut *mut c_void, usize, i32) -> i32;
type AclrtFree = unsafe extern "C" fn(*mut c_void) -> i32;
type AclrtMemcpy = unsafe extern "C" fn(*mut c_void, usize, *const c_void, usize, i32) -> i32;

/// The resolved HCCL and ACL entry points; the libraries stay loaded while this lives.
pub struct HcclLib {
    get_root_info: HcclGetRootInfo,
    init_root_info: HcclCommInitRootInfo,
    all_to_all_v: HcclAlltoAllV,
    destroy: HcclCommDestroy,
    acl_init: AclInit,
    set_device: AclrtSetDevice,
    create_stream: AclrtCreateStream,
    destroy_stream: AclrtDestroyStream,
    sync_stream: AclrtSynchronizeStream,
    malloc: AclrtMalloc,
    free: AclrtFree,
    memcpy: AclrtMemcpy,
    _libs: Vec<Library>,
}

/// Where the CANN libraries are looked for, in order: the Ascend backend's list
/// ([`moehal_ascend::search_dirs`]; `MOEHAL_ASCEND_LIB_DIR` only when it names a directory).
pub fn search_dirs() -> Vec<PathBuf> {
    moehal_ascend::search_dirs()
}

fn unavailable(reason: String) -> Error {
    Error::Unavailable {
        backend: "hccl".into(),
        reason,
    }
}

fn hccl_err(what: &str, code: i32) -> Error {
    Error::Device {
        backend: "hccl".into(),
        code: code as i64,
        msg: what.into(),
    }
}

// SAFETY (module): the function types above are the C prototypes of CANN's `hccl.h` and
// `acl_rt.h`; every pointer passed is either one of ours, live for the call, or a handle the
// library returned. Symbols are resolved once and the libraries outlive them (`_libs`).
impl HcclLib {
    /// Open `libascendcl.so` and `libhccl.so` from the first of `dirs` holding each and resolve
    /// every entry point.
    ///
    /// # Errors
    /// [`Error::Unavailable`] naming the missing library (and where it was looked for) or symbols.
    pub fn load(dirs: &[PathBuf]) -> Result<Self> {
        let open = |name: &str| -> Result<Library> {
            let path = dirs.iter().map(|d| d.join(name)).find(|p| p.is_file()).ok_or_else(|| {
                let shown: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
                unavailable(format!(
                    "{name} not found (searched: {}; {})",
                    if shown.is_empty() {
                        "nothing".to_string()
                    } else {
                        shown.join(", ")
                    },
                    moehal_ascend::not_found_hint(name, &format!("no {name}"))
                ))
            })?;
            // SAFETY: loading runs the vendor library's initialisers, as its documentation expects.
            unsafe { Library::new(&path) }.map_err(|e| unavailable(format!("{}: {e}", path.display())))
        };
        let acl = open("libascendcl.so")?;
        let hccl = open("libhccl.so")?;
        let mut missing = Vec::new();
        macro_rules! sym {
            ($lib:expr, $name:literal, $ty:ty) => {
                // SAFETY: the symbol's C prototype is `$ty` (see the module comment).
                match unsafe { $lib.get::<$ty>(concat!($name, "\0").as_bytes()) } {
                    Ok(f) => Some(*f),
                    Err(_) => {
                        missing.push($name);
                        None
                    }
                }
            };
        }
        let get_root_info = sym!(hccl, "HcclGetRootInfo", HcclGetRootInfo);
        let init_root_info = sym!(hccl, "HcclCommInitRootInfo", HcclCommInitRootInfo);
        let all_to_all_v = sym!(hccl, "HcclAlltoAllV", HcclAlltoAllV);
        let destroy = sym!(hccl, "HcclCommDestroy", HcclCommDestroy);
        let acl_init = sym!(acl, "aclInit", AclInit);
        let set_device = sym!(acl, "aclrtSetDevice", AclrtSetDevice);
        let create_stream = sym!(acl, "aclrtCreateStream", AclrtCreateStream);
        let destroy_stream = sym!(acl, "aclrtDestroyStream", AclrtDestroyStream);
        let sync_stream = sym!(acl, "aclrtSynchronizeStream", AclrtSynchronizeStream);
        let malloc = sym!(acl, "aclrtMalloc", AclrtMalloc);
        let free = sym!(acl, "aclrtFree", AclrtFree);
        let memcpy = sym!(acl, "aclrtMemcpy", AclrtMemcpy);
        match (
            get_root_info,
            init_root_info,
            all_to_all_v,
            destroy,
            acl_init,
            set_device,
            create_stream,
            destroy_stream,
            sync_stream,
            malloc,
            free,
            memcpy,
        ) {
            (
                Some(get_root_info),
                Some(init_root_info),
                Some(all_to_all_v),
                Some(destroy),
                Some(acl_init),
                Some(set_device),
                Some(create_stream),
                Some(destroy_stream),
                Some(sync_stream),
                Some(malloc),
                Some(free),
                Some(memcpy),
            ) => Ok(HcclLib {
                get_root_info,
                init_root_info,
                all_to_all_v,
                destroy,
                acl_init,
                set_device,
                create_stream,
                destroy_stream,
                sync_stream,
                malloc,
                free,
                memcpy,
                _libs: vec![hccl, acl],
            }),
            _ => Err(unavailable(format!("missing symbols: {}", missing.join(", ")))),
        }
    }

    /// `HcclGetRootInfo` on the root rank: the bytes every rank passes to [`HcclComm::init`].
    ///
    /// # Errors
    /// [`Error::Device`] with HCCL's code.
    pub fn root_info(&self) -> Result<Vec<u8>> {
        let mut info = vec![0u8; ROOT_INFO_BYTES];
        // SAFETY: `info` has the 4108 bytes of `HcclRootInfo`.
        let rc = unsafe { (self.get_root_info)(info.as_mut_ptr()) };
        if rc != 0 {
            return Err(hccl_err("HcclGetRootInfo", rc));
        }
        Ok(info)
    }
}

/// Device buffer freed on drop.
struct DevBuf<'a> {
    lib: &'a HcclLib,
    ptr: *mut c_void,
}

impl<'a> DevBuf<'a> {
    fn new(lib: &'a HcclLib, bytes: usize) -> Result<Self> {
        let mut ptr = std::ptr::null_mut();
        // SAFETY: out-pointer to a local; at least 1 byte so that the pointer is valid.
        let rc = unsafe { (lib.malloc)(&mut ptr, bytes.max(1), ACL_MEM_MALLOC_HUGE_FIRST) };
        if rc != 0 {
            return Err(hccl_err("aclrtMalloc", rc));
        }
        Ok(DevBuf { lib, ptr })
    }
}

impl Drop for DevBuf<'_> {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from aclrtMalloc and is freed once.
        unsafe { (self.lib.free)(self.ptr) };
    }
}

/// An HCCL communicator of `size` ranks on one NPU each.
pub struct HcclComm {
    lib: HcclLib,
    comm: *mut c_void,
    stream: *mut c_void,
    rank: usize,
    size: usize,
    /// HCCL calls on one communicator are not re-entrant.
    lock: Mutex<()>,
}

// SAFETY: the handles are used under `lock`, one call at a time; HCCL allows a communicator to be
// used from any host thread that has set the same device.
unsafe impl Send for HcclComm {}
// SAFETY: as above; every use goes through `lock`.
unsafe impl Sync for HcclComm {}

impl HcclComm {
    /// `aclInit`, `aclrtSetDevice(device)`, a stream, and `HcclCommInitRootInfo(size, root_info,
    /// rank)`. Every rank passes the root rank's [`HcclLib::root_info`] bytes (sent by the
    /// launcher's own channel, e.g. MPI or torch.distributed).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a root info of the wrong length or `rank >= size`;
    /// [`Error::Device`] with ACL's or HCCL's code.
    pub fn init(lib: HcclLib, size: usize, rank: usize, root_info: &[u8], device: i32) -> Result<Self> {
        if root_info.len() != ROOT_INFO_BYTES || rank >= size {
            return Err(Error::invalid(
                "hccl_init",
                "root_info",
                format!(
                    "{} bytes (HcclRootInfo is {ROOT_INFO_BYTES}), rank {rank} of {size}",
                    root_info.len()
                ),
            ));
        }
        // SAFETY: null config is "no config file" in aclInit's documentation.
        let rc = unsafe { (lib.acl_init)(std::ptr::null()) };
        if rc != 0 && rc != ACL_ERROR_REPEAT_INITIALIZE {
            return Err(hccl_err("aclInit", rc));
        }
        // SAFETY: plain value argument.
        let rc = unsafe { (lib.set_device)(device) };
        if rc != 0 {
            return Err(hccl_err("aclrtSetDevice", rc));
        }
        let mut stream = std::ptr::null_mut();
        // SAFETY: out-pointer to a local.
        let rc = unsafe { (lib.create_stream)(&mut stream) };
        if rc != 0 {
            return Err(hccl_err("aclrtCreateStream", rc));
        }
        let mut comm = std::ptr::null_mut();
        // SAFETY: `root_info` has HcclRootInfo's size; out-pointer to a local.
        let rc = unsafe { (lib.init_root_info)(size as u32, root_info.as_ptr(), rank as u32, &mut comm) };
        if rc != 0 {
            // SAFETY: the stream was created above and is not used again.
            unsafe { (lib.destroy_stream)(stream) };
            return Err(hccl_err("HcclCommInitRootInfo", rc));
        }
        Ok(HcclComm {
            lib,
            comm,
            stream,
            rank,
            size,
            lock: Mutex::new(()),
        })
    }

    fn copy(&self, dst: *mut c_void, dst_max: usize, src: *const c_void, n: usize, kind: i32) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        // SAFETY: both pointers cover `n` bytes (callers pass our buffers of that size).
        let rc = unsafe { (self.lib.memcpy)(dst, dst_max, src, n, kind) };
        if rc != 0 {
            return Err(hccl_err("aclrtMemcpy", rc));
        }
        Ok(())
    }
}

impl Drop for HcclComm {
    fn drop(&mut self) {
        // SAFETY: handles created in `init`, destroyed once.
        unsafe {
            (self.lib.destroy)(self.comm);
            (self.lib.destroy_stream)(self.stream);
        }
    }
}

impl Comm for HcclComm {
    fn name(&self) -> &str {
        "hccl"
    }

    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn all_to_all_u64(&self, send: &[u64]) -> Result<Vec<u64>> {
        if send.len() != self.size {
            return Err(Error::invalid(
                "all_to_all_u64",
                "send",
                format!("{} values for {} ranks", send.len(), self.size),
            ));
        }
        let bytes: Vec<u8> = send.iter().flat_map(|v| v.to_le_bytes()).collect();
        let counts = vec![8usize; self.size];
        let mut recv = vec![0u8; bytes.len()];
        self.all_to_all_v(&bytes, &counts, &mut recv, &counts)?;
        Ok(recv
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect())
    }

    fn all_to_all_v(&self, send: &[u8], send_counts: &[usize], recv: &mut [u8], recv_counts: &[usize]) -> Result<()> {
        check_v(self.size, send, send_counts, recv, recv_counts)?;
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let dsend = DevBuf::new(&self.lib, send.len())?;
        let drecv = DevBuf::new(&self.lib, recv.len())?;
        self.copy(
            dsend.ptr,
            send.len().max(1),
            send.as_ptr().cast(),
            send.len(),
            ACL_MEMCPY_HOST_TO_DEVICE,
        )?;
        let u = |v: &[usize]| v.iter().map(|&x| x as u64).collect::<Vec<u64>>();
        let (sc, sd, rc, rd) = (
            u(send_counts),
            u(&displs(send_counts)),
            u(recv_counts),
            u(&displs(recv_counts)),
        );
        // SAFETY: device buffers of the summed counts; count arrays of `size` u64 live across the
        // call, which completes on `stream` before it is synchronized below.
        let code = unsafe {
            (self.lib.all_to_all_v)(
                dsend.ptr,
                sc.as_ptr().cast(),
                sd.as_ptr().cast(),
                HCCL_DATA_TYPE_UINT8,
                drecv.ptr,
                rc.as_ptr().cast(),
                rd.as_ptr().cast(),
                HCCL_DATA_TYPE_UINT8,
                self.comm,
                self.stream,
            )
        };
        if code != 0 {
            return Err(hccl_err("HcclAlltoAllV", code));
        }
        // SAFETY: our stream.
        let code = unsafe { (self.lib.sync_stream)(self.stream) };
        if code != 0 {
            return Err(hccl_err("aclrtSynchronizeStream", code));
        }
        let n = recv.len();
        self.copy(recv.as_mut_ptr().cast(), n, drecv.ptr, n, ACL_MEMCPY_DEVICE_TO_HOST)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_library_is_unavailable_with_a_reason() {
        let dir = std::env::temp_dir().join("moehal-ep-no-cann");
        let e = HcclLib::load(std::slice::from_ref(&dir)).err().expect("no CANN there");
        let s = e.to_string();
        assert!(matches!(e, Error::Unavailable { .. }), "{s}");
        assert!(
            s.contains("libascendcl.so not found") && s.contains(&dir.display().to_string()),
            "{s}"
        );
    }

    /// Issue 16 leftover: this engine read `MOEHAL_ASCEND_LIB_DIR` on its own, searched a file
    /// named there and said "set MOEHAL_ASCEND_LIB_DIR" when it was set. Now it follows the
    /// Ascend loader's rule and words: a file is not searched and is said to be a file.
    /// (The only test of this crate that sets the variable; the other reads no part of it.)
    #[test]
    fn a_lib_dir_naming_a_file_is_said_to_be_one_as_the_ascend_loader_says() {
        let dir = std::env::temp_dir().join(format!("moehal-ep-libdir-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("not-a-dir");
        std::fs::write(&file, b"x").unwrap();
        std::env::set_var(moehal_ascend::LIB_DIR_ENV, &file);
        let dirs = search_dirs();
        let e = HcclLib::load(&dirs).err();
        std::env::remove_var(moehal_ascend::LIB_DIR_ENV);
        assert_eq!(dirs, moehal_ascend::search_dirs(), "one search list");
        assert!(!dirs.contains(&file), "a file was searched: {dirs:?}");
        // On a machine with CANN installed the libraries load from the other directories.
        if let Some(e) = e {
            let s = e.to_string();
            let problem = moehal_ascend::lib_dir_problem(&file).expect("a file is a problem");
            assert!(s.contains(&format!("{problem}, so it was not searched")), "{s}");
            assert!(s.contains("names a file, not a directory"), "{s}");
            assert!(!s.contains("set MOEHAL_ASCEND_LIB_DIR or"), "{s}");
        }
        std::fs::remove_dir_all(&dir).ok();
    }
}
