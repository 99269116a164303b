//! Named tensors as the engines take and give them: the same shape as the WIT `tensor`
//! record (`wit/types.wit`), so a processor plugin's tensors reach an engine unchanged.

use serde::{Deserialize, Serialize};

/// Element types (the WIT `dtype` enum, same names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    F16,
    Bf16,
    F32,
    F64,
    I8,
    I16,
    I32,
    I64,
    U8,
    U16,
    U32,
    U64,
    Boolean,
    /// Strings: each element a little-endian u32 byte length, then its UTF-8 bytes.
    Utf8,
}

impl DType {
    /// Bytes per element; `None` for `Utf8` (variable).
    pub fn size(self) -> Option<usize> {
        Some(match self {
            DType::I8 | DType::U8 | DType::Boolean => 1,
            DType::F16 | DType::Bf16 | DType::I16 | DType::U16 => 2,
            DType::F32 | DType::I32 | DType::U32 => 4,
            DType::F64 | DType::I64 | DType::U64 => 8,
            DType::Utf8 => return None,
        })
    }
}

/// A named tensor: `data` holds the elements row-major, little-endian.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<u64>,
    pub data: Vec<u8>,
}
