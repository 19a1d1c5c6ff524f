//! `Selection`: the layers or heads a spec key picks, `all` or a list of indices (negative ones
//! count from the end), and its resolution against a model's count.

use std::fmt;

use serde::Serialize;
use serde::de::{self, Deserialize, Deserializer, SeqAccess, Visitor};

/// `all` or a list of indices (layers or heads); negative indices count from the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    All,
    List(Vec<i64>),
}

impl Serialize for Selection {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Selection::All => s.serialize_str("all"),
            Selection::List(v) => v.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Selection {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Selection;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("`all` or a list of indices")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Selection, E> {
                if s == "all" {
                    Ok(Selection::All)
                } else {
                    Err(E::invalid_value(de::Unexpected::Str(s), &self))
                }
            }
            fn visit_i64<E: de::Error>(self, i: i64) -> Result<Selection, E> {
                Ok(Selection::List(vec![i]))
            }
            fn visit_u64<E: de::Error>(self, i: u64) -> Result<Selection, E> {
                i64::try_from(i)
                    .map(|i| Selection::List(vec![i]))
                    .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(i), &self))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Selection, A::Error> {
                let mut v = Vec::new();
                while let Some(i) = seq.next_element::<i64>()? {
                    v.push(i);
                }
                Ok(Selection::List(v))
            }
        }
        d.deserialize_any(V)
    }
}

impl Selection {
    /// The selected indices in 0..n, in the order given (`all`: 0..n). Negative indices count
    /// from the end. Errors name the first index out of range.
    pub fn resolve(&self, n: usize) -> Result<Vec<usize>, String> {
        match self {
            Selection::All => Ok((0..n).collect()),
            Selection::List(v) => v
                .iter()
                .map(|&i| {
                    let j = if i < 0 { i + n as i64 } else { i };
                    if (0..n as i64).contains(&j) {
                        Ok(j as usize)
                    } else {
                        Err(format!("index {i} is out of range"))
                    }
                })
                .collect(),
        }
    }
}
