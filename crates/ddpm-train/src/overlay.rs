//! A TOML table laid over a config's own defaults: the network configs of ddpm-models are the
//! file format, with no parallel copy of their fields here.
//!
//! [`overlay`] serialises the config (its `#[derive(Config)]` defaults), replaces the keys the
//! table gives and deserialises the result, so every field of the config can be set and no
//! default is written twice. Keys the config does not have are refused with the list of those it
//! has; keys the trainer fills in from the data are refused with that reason. Where a default is
//! a list, one value stands for a list of one (the reference's "an int or a tuple").

use serde::Serialize;
use serde::de::{self, DeserializeOwned, Deserializer, Visitor};

/// The field names of the struct `C` deserialises, as its `Deserialize` declares them (optional
/// fields included, which a serialised default leaves out).
pub fn field_names<C: DeserializeOwned>() -> &'static [&'static str] {
    let mut names: &'static [&'static str] = &[];
    let _ = C::deserialize(FieldNames { out: &mut names });
    names
}

/// `defaults` with the keys of `options` set. Errors are messages that name the key: an unknown
/// key (serde's `unknown field` wording, with the valid keys), a key set from the data, or a value
/// of the wrong type.
pub fn overlay<C: Serialize + DeserializeOwned>(defaults: &C, options: &toml::Table, from_data: &[&str]) -> Result<C, String> {
    let names = field_names::<C>();
    let mut merged = toml::Table::try_from(defaults).map_err(|e| format!("the defaults do not serialise: {e}"))?;
    for (key, value) in options {
        if from_data.contains(&key.as_str()) {
            return Err(format!("`{key}` is set by the trainer (from the data, the diffusion or the kind of network); remove it"));
        }
        if !names.contains(&key.as_str()) {
            let valid: Vec<String> = names.iter().filter(|n| !from_data.contains(n)).map(|n| format!("`{n}`")).collect();
            return Err(format!("unknown field `{key}`, expected one of {}", valid.join(", ")));
        }
        let value = match (merged.get(key), value) {
            (Some(toml::Value::Array(_)), v) if !v.is_array() => toml::Value::Array(vec![v.clone()]),
            _ => value.clone(),
        };
        merged.insert(key.clone(), value);
    }
    serde_path_to_error::deserialize(toml::Value::Table(merged)).map_err(|e| {
        let key = e.path().to_string();
        format!("`{key}`: {}", e.into_inner().message())
    })
}

/// A deserializer that only records the field list a struct asks for.
struct FieldNames<'a> {
    out: &'a mut &'static [&'static str],
}

impl<'de> Deserializer<'de> for FieldNames<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("only a struct's field names are read"))
    }

    fn deserialize_struct<V: Visitor<'de>>(self, _name: &'static str, fields: &'static [&'static str], _visitor: V) -> Result<V::Value, Self::Error> {
        *self.out = fields;
        Err(de::Error::custom("field names read"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
        unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
    }
}
