//! The emulator's strictness, called directly through its exported C ABI (one test: the runtime
//! state is per process).

use std::ffi::{c_void, CStr};
use std::ptr;

use ascendcl::abi::*;
use ascendcl::sys;

fn msg() -> String {
    let p = aclGetRecentErrMsg();
    assert!(!p.is_null());
    // SAFETY: non-null, NUL-terminated, valid until the next call on this thread.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

#[test]
fn emulator_is_strict() {
    // Before aclInit.
    assert_eq!(aclrtSetDevice(0), sys::ACL_ERROR_UNINITIALIZE);
    assert_eq!(aclInit(ptr::null()), sys::ACL_SUCCESS);
    assert_eq!(aclInit(ptr::null()), sys::ACL_ERROR_REPEAT_INITIALIZE);

    // No current device on this thread: 107002.
    let mut p: *mut c_void = ptr::null_mut();
    // SAFETY: out-pointer to a local.
    assert_eq!(
        unsafe { aclrtMalloc(&mut p, 10, sys::ACL_MEM_MALLOC_HUGE_FIRST) },
        sys::ACL_ERROR_RT_CONTEXT_NULL
    );
    assert!(msg().contains("aclrtSetDevice"));
    assert_eq!(aclrtSetDevice(1), sys::ACL_ERROR_RT_INVALID_DEVICEID);
    assert_eq!(aclrtSetDevice(0), sys::ACL_SUCCESS);
    // Another thread has no device bound.
    std::thread::spawn(|| {
        let mut q: *mut c_void = ptr::null_mut();
        // SAFETY: out-pointer to a local.
        assert_eq!(
            unsafe { aclrtMalloc(&mut q, 10, sys::ACL_MEM_MALLOC_HUGE_FIRST) },
            sys::ACL_ERROR_RT_CONTEXT_NULL
        );
    })
    .join()
    .unwrap();

    // Malloc rounds to 32 bytes: [p, p+32) is device memory, p+32 is not.
    // SAFETY: out-pointer to a local.
    assert_eq!(unsafe { aclrtMalloc(&mut p, 10, sys::ACL_MEM_MALLOC_HUGE_FIRST) }, 0);
    assert_eq!(p as usize % 32, 0);
    let host = [7u8; 64];
    // SAFETY: host buffer valid for 64 bytes; device side checked by the emulator.
    unsafe {
        assert_eq!(
            aclrtMemcpy(p, 32, host.as_ptr().cast(), 32, sys::ACL_MEMCPY_HOST_TO_DEVICE),
            0
        );
        assert_eq!(
            aclrtMemcpy(p, 33, host.as_ptr().cast(), 33, sys::ACL_MEMCPY_HOST_TO_DEVICE),
            sys::ACL_ERROR_INVALID_PARAM
        );
        // count > destMax
        assert_eq!(
            aclrtMemcpy(p, 8, host.as_ptr().cast(), 16, sys::ACL_MEMCPY_HOST_TO_DEVICE),
            sys::ACL_ERROR_INVALID_PARAM
        );
        assert!(msg().contains("destMax"));
        // wrong kind: device source declared as host
        let mut back = [0u8; 32];
        assert_eq!(
            aclrtMemcpy(back.as_mut_ptr().cast(), 32, p, 32, sys::ACL_MEMCPY_HOST_TO_HOST),
            sys::ACL_ERROR_INVALID_PARAM
        );
        assert_eq!(
            aclrtMemcpy(back.as_mut_ptr().cast(), 32, p, 32, sys::ACL_MEMCPY_DEVICE_TO_HOST),
            0
        );
        assert_eq!(back, [7u8; 32]);
        // host pointer as the device destination
        let mut h2 = [0u8; 32];
        assert_eq!(
            aclrtMemcpy(
                h2.as_mut_ptr().cast(),
                32,
                host.as_ptr().cast(),
                32,
                sys::ACL_MEMCPY_HOST_TO_DEVICE
            ),
            sys::ACL_ERROR_INVALID_PARAM
        );
        assert!(msg().contains("host memory"));
        assert_eq!(aclrtMemset(p, 33, 0, 1), sys::ACL_ERROR_INVALID_PARAM);
    }

    // Tensor lists own their tensors; executors are single-use.
    let mut stream: sys::aclrtStream = ptr::null_mut();
    let mut src: *mut c_void = ptr::null_mut();
    let mut dst: *mut c_void = ptr::null_mut();
    // SAFETY: out-pointers to locals; arrays valid for their lengths.
    unsafe {
        assert_eq!(aclrtCreateStream(&mut stream), 0);
        assert_eq!(aclrtMalloc(&mut src, 16, 0), 0);
        assert_eq!(aclrtMalloc(&mut dst, 64, 0), 0);
        let dims = [4i64];
        let a = aclCreateTensor(
            dims.as_ptr(),
            1,
            sys::ACL_INT32,
            ptr::null(),
            0,
            sys::ACL_FORMAT_ND,
            dims.as_ptr(),
            1,
            src,
        );
        let b = aclCreateTensor(
            dims.as_ptr(),
            1,
            sys::ACL_INT64,
            ptr::null(),
            0,
            sys::ACL_FORMAT_ND,
            dims.as_ptr(),
            1,
            dst,
        );
        let l = aclCreateTensorList([a as *const _].as_ptr(), 1);
        assert!(!l.is_null());
        assert_eq!(aclDestroyTensor(a), sys::ACLNN_ERR_PARAM_INVALID);
        assert_eq!(aclDestroyTensorList(l), 0);
        assert_eq!(
            aclDestroyTensor(a),
            sys::ACLNN_ERR_PARAM_INVALID,
            "destroyed with its list"
        );

        let a = aclCreateTensor(
            dims.as_ptr(),
            1,
            sys::ACL_INT32,
            ptr::null(),
            0,
            sys::ACL_FORMAT_ND,
            dims.as_ptr(),
            1,
            src,
        );
        let vals = [1i32, -2, 3, 4];
        assert_eq!(
            aclrtMemcpy(src, 16, vals.as_ptr().cast(), 16, sys::ACL_MEMCPY_HOST_TO_DEVICE),
            0
        );
        let (mut ws, mut ex) = (0u64, ptr::null_mut());
        // Phase one: null required argument -> 161001; dtype mismatch -> 161002.
        assert_eq!(
            aclnnCastGetWorkspaceSize(ptr::null(), sys::ACL_INT64, b, &mut ws, &mut ex),
            sys::ACLNN_ERR_PARAM_NULLPTR
        );
        assert_eq!(
            aclnnCastGetWorkspaceSize(a, sys::ACL_FLOAT, b, &mut ws, &mut ex),
            sys::ACLNN_ERR_PARAM_INVALID
        );
        assert_eq!(aclnnCastGetWorkspaceSize(a, sys::ACL_INT64, b, &mut ws, &mut ex), 0);
        assert_eq!(
            aclnnGatherV2(ptr::null_mut(), 0, ex, stream),
            sys::ACLNN_ERR_PARAM_INVALID,
            "wrong launch"
        );
        assert_eq!(aclnnCast(ptr::null_mut(), 0, ex, stream), 0);
        assert_eq!(
            aclnnCast(ptr::null_mut(), 0, ex, stream),
            sys::ACLNN_ERR_PARAM_INVALID,
            "single use"
        );
        let mut out = [0i64; 4];
        assert_eq!(
            aclrtMemcpy(out.as_mut_ptr().cast(), 32, dst, 32, sys::ACL_MEMCPY_DEVICE_TO_HOST),
            0
        );
        assert_eq!(out, [1, -2, 3, 4]);

        // Misaligned tensor data -> 161002 at phase one.
        let c = aclCreateTensor(
            dims.as_ptr(),
            1,
            sys::ACL_INT32,
            ptr::null(),
            0,
            sys::ACL_FORMAT_ND,
            dims.as_ptr(),
            1,
            (src as usize + 4) as *mut c_void,
        );
        assert_eq!(
            aclnnCastGetWorkspaceSize(c, sys::ACL_INT64, b, &mut ws, &mut ex),
            sys::ACLNN_ERR_PARAM_INVALID
        );
        assert!(msg().contains("32-byte aligned"));
        for t in [a, b, c] {
            assert_eq!(aclDestroyTensor(t), 0);
        }
        for q in [p, src, dst] {
            assert_eq!(aclrtFree(q), 0);
        }
        assert_eq!(aclrtFree(p), sys::ACL_ERROR_INVALID_PARAM, "double free");
        assert_eq!(aclrtDestroyStream(stream), 0);
    }
    // SAFETY: returns a static string after init.
    let soc = unsafe { CStr::from_ptr(aclrtGetSocName()) };
    assert_eq!(soc.to_str().unwrap(), SOC_NAME);
}
