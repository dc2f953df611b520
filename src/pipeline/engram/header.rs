//! The header of a safetensors file, parsed and checked here rather than by the `safetensors`
//! crate: the crate version this workspace builds (0.4) knows 15 of the format's dtypes and
//! rejected a whole file, table included, when any other tensor had a newer one (an `F8_E8M0`
//! scale tensor, as DeepSeek checkpoints carry, read as "JSON but not a safetensors header").
//!
//! The format (<https://github.com/huggingface/safetensors>, README "Format"): 8 bytes, a
//! little-endian u64 `N`; `N` bytes of UTF-8 JSON, a map of tensor name to `{dtype, shape,
//! data_offsets}` (plus an optional `__metadata__` map); then the data section, which the
//! tensors' `[begin, end)` byte ranges (relative to its start) tile exactly, with no gap, overlap
//! or trailing byte. Every dtype the format defines is accepted ([`DTYPES`], with its size); a
//! tensor of a dtype not in that list is accepted too, but its size is not checked against its
//! shape (a newer writer's dtype must not make the file unreadable for the tensors we read). The
//! reader of a tensor decides which dtypes it supports, and says so naming the tensor.

/// Every dtype of the safetensors format with its size in bits per element: the `Dtype` enum of
/// the `safetensors` crate 0.8.0 (the newest release when this was written), sub-byte dtypes
/// included (`F4`, `F6_E2M3`, `F6_E3M2`: a tensor of them must fill whole bytes).
pub const DTYPES: [(&str, u64); 22] = [
    ("BOOL", 8),
    ("F4", 4),
    ("F6_E2M3", 6),
    ("F6_E3M2", 6),
    ("U8", 8),
    ("I8", 8),
    ("F8_E5M2", 8),
    ("F8_E4M3", 8),
    ("F8_E8M0", 8),
    ("F8_E4M3FNUZ", 8),
    ("F8_E5M2FNUZ", 8),
    ("I16", 16),
    ("U16", 16),
    ("F16", 16),
    ("BF16", 16),
    ("I32", 32),
    ("U32", 32),
    ("F32", 32),
    ("C64", 64),
    ("F64", 64),
    ("I64", 64),
    ("U64", 64),
];

/// Bits per element of a safetensors dtype name, `None` for a name not in [`DTYPES`].
pub fn dtype_bits(name: &str) -> Option<u64> {
    DTYPES.iter().find(|(n, _)| *n == name).map(|&(_, b)| b)
}

/// One tensor of a safetensors header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorEntry {
    /// Its name (the header's key).
    pub name: String,
    /// Its dtype, as written (e.g. `BF16`, `F8_E8M0`).
    pub dtype: String,
    /// Its shape (elements per dimension; `[]` is a scalar).
    pub shape: Vec<u64>,
    /// Its bytes `[begin, end)` in the data section (file offsets `8 + N + begin ..`).
    pub data_offsets: (u64, u64),
}

/// A parsed and checked safetensors header.
#[derive(Debug, Clone)]
pub struct Header {
    /// `N`, the header's length in bytes (the data section starts at file offset `8 + N`).
    pub len: u64,
    /// The tensors, in the order of their data.
    pub tensors: Vec<TensorEntry>,
}

impl Header {
    /// The tensor of this name.
    pub fn get(&self, name: &str) -> Option<&TensorEntry> {
        self.tensors.iter().find(|t| t.name == name)
    }
}

/// A pass over a JSON document that keeps nothing and fails on a map with a key twice.
/// `serde_json` keeps the last of two equal keys; a safetensors header with a tensor named twice
/// would then silently read one of the two tensors (issue 16: a hand-made file was accepted), and
/// a tensor's `"dtype"` given twice would be one of the two. The format names each tensor once
/// (the `safetensors` crate reads the header into a map, so it cannot tell either); this pass
/// rejects it, naming the key. The values themselves are read by `serde_json::Value` in a second
/// pass, so number handling stays serde_json's whatever features the build unifies (with
/// `arbitrary_precision` a number reaches a visitor as a one-key map, which this pass accepts).
struct UniqueKeys;

impl<'de> serde::Deserialize<'de> for UniqueKeys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UniqueKeysVisitor)
    }
}

/// The visitor of [`UniqueKeys`]: maps and lists walked recursively, every other kind accepted.
struct UniqueKeysVisitor;

impl<'de> serde::de::Visitor<'de> for UniqueKeysVisitor {
    type Value = UniqueKeys;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(UniqueKeys)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(UniqueKeys)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(UniqueKeys)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(UniqueKeys)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(UniqueKeys)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(UniqueKeys)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<UniqueKeys>()?.is_some() {}
        Ok(UniqueKeys)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(k) = map.next_key::<String>()? {
            map.next_value::<UniqueKeys>()?;
            if !seen.insert(k.clone()) {
                return Err(serde::de::Error::custom(format!(
                    "names key `{k}` twice in one map (each tensor, and each field of a tensor, is named once; \
                     a reader would silently keep one of the two)"
                )));
            }
        }
        Ok(UniqueKeys)
    }
}

const SHAPE: &str = "a safetensors header maps each tensor name to {\"dtype\", \"shape\", \"data_offsets\"}";

/// Parse the header of `file` (the whole file) and check it against the file, in words with sizes
/// and offsets.
///
/// # Errors
/// A sentence saying what is wrong: the header length does not fit the file, the header is not
/// UTF-8 JSON or not a map of tensors, a tensor lacks a field or has one of the wrong type, its
/// byte size (shape × dtype size) differs from its `data_offsets`, tensors overlap or leave a gap,
/// or the data section is shorter or longer than the tensors' data.
pub fn parse(file: &[u8]) -> Result<Header, String> {
    let len = file.len() as u64;
    let n8: [u8; 8] = file.get(..8).and_then(|b| b.try_into().ok()).ok_or_else(|| {
        format!("not a safetensors file: {len} bytes, shorter than the 8-byte header length that starts one")
    })?;
    let n = u64::from_le_bytes(n8);
    let hend = n
        .checked_add(8)
        .filter(|&e| e <= len)
        .ok_or_else(|| format!("truncated or not a safetensors file: the header length at offset 0 says {n} bytes, but the file has {len} bytes"))?;
    let text = std::str::from_utf8(&file[8..hend as usize]).map_err(|e| {
        format!(
            "the {n}-byte header at offset 8 is not UTF-8 (invalid byte at file offset {})",
            8 + e.valid_up_to()
        )
    })?;
    let json: serde_json::Value = match serde_json::from_str::<UniqueKeys>(text) {
        Ok(UniqueKeys) => {
            serde_json::from_str(text).map_err(|e| format!("the {n}-byte header at offset 8 is not JSON: {e}"))?
        }
        // A `Data` error is the one [`UniqueKeys`] raises: a key that appears twice in one map.
        Err(e) if e.classify() == serde_json::error::Category::Data => {
            return Err(format!("the {n}-byte header at offset 8 {e}"))
        }
        Err(e) => return Err(format!("the {n}-byte header at offset 8 is not JSON: {e}")),
    };
    let map = json
        .as_object()
        .ok_or_else(|| format!("the header at offset 8 is JSON but not a map ({SHAPE})"))?;
    let mut tensors = Vec::with_capacity(map.len());
    for (name, v) in map {
        if name == "__metadata__" {
            if !v.is_object() {
                return Err("`__metadata__` is not a map of strings".into());
            }
            continue;
        }
        tensors.push(entry(name, v)?);
    }
    tensors.sort_by_key(|t| t.data_offsets);
    let data = len - hend;
    let mut at = 0u64;
    let mut prev: Option<&str> = None;
    for t in &tensors {
        let (b, e) = t.data_offsets;
        if b < at {
            return Err(format!(
                "tensor `{}`: data_offsets [{b}, {e}) overlap tensor `{}`'s, which ends at {at}",
                t.name,
                prev.unwrap_or("")
            ));
        }
        if b > at {
            return Err(format!(
                "bytes [{at}, {b}) of the data section (file offsets [{}, {})) belong to no tensor: tensor `{}` starts at {b}",
                hend.saturating_add(at),
                hend.saturating_add(b),
                t.name
            ));
        }
        at = e;
        prev = Some(&t.name);
    }
    if at > data {
        return Err(format!(
            "truncated: the tensors' data_offsets end at byte {at} of the data section (file offset {}), but the file has {data} data bytes after the {n}-byte header ({len} bytes in all): tensor `{}` lies outside the file",
            hend.saturating_add(at),
            prev.unwrap_or("")
        ));
    }
    if at < data {
        return Err(format!(
            "{} bytes past the end of the last tensor: the tensors' data ends at file offset {}, the file at {len} (a safetensors file has no trailing bytes)",
            data - at,
            hend + at
        ));
    }
    for t in &tensors {
        check_size(t)?;
    }
    Ok(Header { len: n, tensors })
}

/// One tensor's entry, checked on its own (fields, types, `begin <= end`; the size against the
/// shape is [`check_size`]'s, after the ranges).
fn entry(name: &str, v: &serde_json::Value) -> Result<TensorEntry, String> {
    let field = |k: &str| {
        v.get(k)
            .ok_or_else(|| format!("tensor `{name}` has no \"{k}\" ({SHAPE})"))
    };
    let dtype = field("dtype")?
        .as_str()
        .ok_or_else(|| format!("tensor `{name}`: \"dtype\" is not a string"))?
        .to_string();
    let shape = field("shape")?
        .as_array()
        .and_then(|a| a.iter().map(serde_json::Value::as_u64).collect::<Option<Vec<u64>>>())
        .ok_or_else(|| format!("tensor `{name}`: \"shape\" is not a list of whole numbers"))?;
    let offs = field("data_offsets")?
        .as_array()
        .and_then(|a| a.iter().map(serde_json::Value::as_u64).collect::<Option<Vec<u64>>>())
        .filter(|a| a.len() == 2)
        .ok_or_else(|| format!("tensor `{name}`: \"data_offsets\" is not [begin, end] in bytes"))?;
    let (b, e) = (offs[0], offs[1]);
    if e < b {
        return Err(format!(
            "tensor `{name}`: data_offsets [{b}, {e}) end before they begin"
        ));
    }
    Ok(TensorEntry {
        name: name.to_string(),
        dtype,
        shape,
        data_offsets: (b, e),
    })
}

/// A tensor's byte size against its shape and dtype (checked after the ranges: a range outside
/// the file is named as such first, whatever its size).
fn check_size(t: &TensorEntry) -> Result<(), String> {
    let (name, dtype, shape) = (&t.name, &t.dtype, &t.shape);
    let (b, e) = t.data_offsets;
    if let Some(bits) = dtype_bits(dtype) {
        let total = shape
            .iter()
            .try_fold(bits, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| format!("tensor `{name}`: {dtype} {shape:?} has more than 2^64 bits"))?;
        if total % 8 != 0 {
            return Err(format!(
                "tensor `{name}`: {dtype} {shape:?} is {total} bits, not a whole number of bytes"
            ));
        }
        if total / 8 != e - b {
            return Err(format!(
                "tensor `{name}`: {dtype} {shape:?} needs {} bytes, but its data_offsets [{b}, {e}) span {} bytes",
                total / 8,
                e - b
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(header: &str, data: usize) -> Vec<u8> {
        let mut v = (header.len() as u64).to_le_bytes().to_vec();
        v.extend_from_slice(header.as_bytes());
        v.resize(v.len() + data, 0);
        v
    }

    #[test]
    fn every_dtype_of_the_format_is_accepted_with_its_size() {
        for (d, bits) in DTYPES {
            // 16 elements fill whole bytes for every size (4 and 6 bits included).
            let bytes = 16 * bits / 8;
            let h = format!(r#"{{"x":{{"dtype":"{d}","shape":[2,8],"data_offsets":[0,{bytes}]}}}}"#);
            let got = parse(&file(&h, bytes as usize)).unwrap_or_else(|e| panic!("{d}: {e}"));
            assert_eq!(got.get("x").map(|t| t.dtype.as_str()), Some(d));
            // One byte more is a size mismatch, named in words.
            let h = format!(
                r#"{{"x":{{"dtype":"{d}","shape":[2,8],"data_offsets":[0,{}]}}}}"#,
                bytes + 1
            );
            let e = parse(&file(&h, bytes as usize + 1)).unwrap_err();
            assert!(e.contains(&format!("needs {bytes} bytes")), "{d}: {e}");
        }
        let e = parse(&file(r#"{"x":{"dtype":"F4","shape":[3],"data_offsets":[0,1]}}"#, 1)).unwrap_err();
        assert!(e.contains("12 bits, not a whole number of bytes"), "{e}");
    }

    #[test]
    fn tensors_must_tile_the_data_section() {
        let two = |b2: u64, e2: u64, data: usize| {
            let h = format!(
                r#"{{"__metadata__":{{"format":"pt"}},"b":{{"dtype":"U8","shape":[{}],"data_offsets":[{b2},{e2}]}},"a":{{"dtype":"F8_E8M0","shape":[4],"data_offsets":[0,4]}}}}"#,
                e2 - b2
            );
            parse(&file(&h, data))
        };
        let ok = two(4, 6, 6).unwrap();
        let names: Vec<&str> = ok.tensors.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["a", "b"], "sorted by offset");
        assert!(two(3, 5, 5)
            .unwrap_err()
            .contains("overlap tensor `a`'s, which ends at 4"));
        assert!(two(5, 7, 7).unwrap_err().contains("bytes [4, 5) of the data section"));
        assert!(two(4, 6, 5).unwrap_err().starts_with("truncated"));
        assert!(two(4, 6, 9).unwrap_err().starts_with("3 bytes past the end"));
        // A dtype the format does not define: the tensor is kept, its size unchecked.
        let h = r#"{"q":{"dtype":"Q4_K","shape":[7],"data_offsets":[0,3]}}"#;
        assert_eq!(parse(&file(h, 3)).unwrap().tensors[0].dtype, "Q4_K");
    }

    #[test]
    fn a_gap_near_u64_max_is_described_not_an_overflow() {
        // A tensor starting near 2^64 leaves a gap before it: the message's file offsets saturate
        // (debug builds panicked adding the header length).
        let b = u64::MAX - 4;
        let h = format!(r#"{{"x":{{"dtype":"U8","shape":[4],"data_offsets":[{b},{}]}}}}"#, b + 4);
        let e = parse(&file(&h, 4)).unwrap_err();
        assert!(e.contains(&format!("bytes [0, {b}) of the data section")), "{e}");
    }

    #[test]
    fn a_key_named_twice_is_rejected_naming_it() {
        // Two tensors of one name: serde_json's map would keep the second silently.
        let h = r#"{"w":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"w":{"dtype":"U8","shape":[2],"data_offsets":[2,4]}}"#;
        let e = parse(&file(h, 4)).unwrap_err();
        assert!(e.contains("names key `w` twice"), "{e}");
        assert!(!e.contains("not JSON"), "{e}");
        // A field of one tensor given twice.
        let h = r#"{"w":{"dtype":"U8","dtype":"I8","shape":[2],"data_offsets":[0,2]}}"#;
        let e = parse(&file(h, 2)).unwrap_err();
        assert!(e.contains("names key `dtype` twice"), "{e}");
        // Equal keys in different maps are not duplicates; nested values are kept as they are.
        let h = r#"{"__metadata__":{"w":"x","n":"1.5"},"w":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}"#;
        let got = parse(&file(h, 2)).unwrap();
        assert_eq!(got.get("w").map(|t| t.shape.clone()), Some(vec![2]));
    }

    #[test]
    fn malformed_headers_are_described() {
        let cases: [(&str, &str); 6] = [
            ("[1,2]", "JSON but not a map"),
            ("{\"x\":1", "not JSON"),
            (
                r#"{"x":{"shape":[1],"data_offsets":[0,1]}}"#,
                "tensor `x` has no \"dtype\"",
            ),
            (
                r#"{"x":{"dtype":"U8","shape":[-1],"data_offsets":[0,1]}}"#,
                "\"shape\" is not a list",
            ),
            (
                r#"{"x":{"dtype":"U8","shape":[1],"data_offsets":[0]}}"#,
                "\"data_offsets\" is not [begin, end]",
            ),
            (
                r#"{"x":{"dtype":"U8","shape":[0],"data_offsets":[1,0]}}"#,
                "end before they begin",
            ),
        ];
        for (h, want) in cases {
            let e = parse(&file(h, 1)).unwrap_err();
            assert!(e.contains(want), "{h}: {e}");
        }
        let mut f = file("{}", 0);
        f[8] = 0xff;
        assert!(parse(&f).unwrap_err().contains("not UTF-8"));
        assert!(parse(&[1, 2]).unwrap_err().contains("2 bytes"));
        let mut f = 100u64.to_le_bytes().to_vec();
        f.extend_from_slice(b"{}");
        assert!(parse(&f).unwrap_err().contains("says 100 bytes"));
        let e = parse(&file(
            r#"{"x":{"dtype":"U8","shape":[4294967296,4294967296,2],"data_offsets":[0,0]}}"#,
            0,
        ))
        .unwrap_err();
        assert!(e.contains("more than 2^64 bits"), "{e}");
    }
}
