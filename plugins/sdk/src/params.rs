//! Parameter schemas: each node kind declares its parameters with types and defaults, and the
//! engine checks a pipeline's values against them before the first frame.

use std::fmt;

/// The type of a parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ParamType {
    Bool = 0,
    Int = 1,
    Float = 2,
    Str = 3,
    /// A file or directory path; relative paths are resolved against the pipeline file's
    /// directory by the engine.
    Path = 4,
    IntList = 5,
    FloatList = 6,
    StrList = 7,
}

impl ParamType {
    pub const ALL: [ParamType; 8] = [
        ParamType::Bool,
        ParamType::Int,
        ParamType::Float,
        ParamType::Str,
        ParamType::Path,
        ParamType::IntList,
        ParamType::FloatList,
        ParamType::StrList,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ParamType::Bool => "bool",
            ParamType::Int => "integer",
            ParamType::Float => "float",
            ParamType::Str => "string",
            ParamType::Path => "path",
            ParamType::IntList => "list of integers",
            ParamType::FloatList => "list of floats",
            ParamType::StrList => "list of strings",
        }
    }

    pub fn from_u32(code: u32) -> Option<ParamType> {
        ParamType::ALL.into_iter().find(|t| *t as u32 == code)
    }
}

impl fmt::Display for ParamType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A parameter value.
#[derive(Clone, Debug, PartialEq)]
pub enum ParamValue {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    IntList(Vec<i64>),
    FloatList(Vec<f64>),
    StrList(Vec<String>),
}

impl ParamValue {
    /// Whether this value fits `ty` as is (integers are also accepted where floats are
    /// expected; [`ParamValue::coerce`] converts them).
    pub fn coerce(self, ty: ParamType) -> Option<ParamValue> {
        use ParamValue as V;
        match (ty, self) {
            (ParamType::Bool, v @ V::Bool(_)) => Some(v),
            (ParamType::Int, v @ V::Int(_)) => Some(v),
            (ParamType::Float, v @ V::Float(_)) => Some(v),
            (ParamType::Float, V::Int(i)) => Some(V::Float(i as f64)),
            (ParamType::Str | ParamType::Path, v @ V::Str(_)) => Some(v),
            (ParamType::IntList, v @ V::IntList(_)) => Some(v),
            (ParamType::FloatList, v @ V::FloatList(_)) => Some(v),
            (ParamType::FloatList, V::IntList(l)) => {
                Some(V::FloatList(l.into_iter().map(|i| i as f64).collect()))
            }
            (ParamType::StrList, v @ V::StrList(_)) => Some(v),
            // An empty TOML array has no element type; it fits every list type.
            (ParamType::IntList, V::StrList(l)) if l.is_empty() => Some(V::IntList(Vec::new())),
            (ParamType::FloatList, V::StrList(l)) if l.is_empty() => Some(V::FloatList(Vec::new())),
            _ => None,
        }
    }

    /// What this value is, for error messages: "string \"high\"".
    pub fn describe(&self) -> String {
        match self {
            ParamValue::Bool(b) => format!("bool {b}"),
            ParamValue::Int(i) => format!("integer {i}"),
            ParamValue::Float(f) => format!("float {f}"),
            ParamValue::Str(s) => format!("string \"{s}\""),
            ParamValue::IntList(l) => format!("list of integers {l:?}"),
            ParamValue::FloatList(l) => format!("list of floats {l:?}"),
            ParamValue::StrList(l) => format!("list of strings {l:?}"),
        }
    }
}

impl fmt::Display for ParamValue {
    /// TOML syntax.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamValue::Bool(b) => write!(f, "{b}"),
            ParamValue::Int(i) => write!(f, "{i}"),
            ParamValue::Float(x) => write!(f, "{x:?}"),
            ParamValue::Str(s) => write!(f, "{s:?}"),
            ParamValue::IntList(l) => write!(f, "{l:?}"),
            ParamValue::FloatList(l) => write!(f, "{l:?}"),
            ParamValue::StrList(l) => write!(f, "{l:?}"),
        }
    }
}

/// One declared parameter.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamSpec {
    pub name: String,
    pub ty: ParamType,
    /// `None`: the parameter is required.
    pub default: Option<ParamValue>,
    pub doc: String,
    /// The allowed values of a number (or of every element of a list of numbers), inclusive.
    /// The engine checks it at `engine check`, before any node exists, at the value's
    /// `file:line:column`; creating a node checks it again (see `NodeKind::new`).
    pub range: Option<(f64, f64)>,
}

impl ParamSpec {
    /// Restricts a numeric parameter to `min..=max` (see [`ParamSpec::range`]).
    pub fn range(mut self, min: f64, max: f64) -> ParamSpec {
        self.range = Some((min, max));
        self
    }

    /// Whether `value` is within the declared range: `Err` says what is allowed.
    pub fn check(&self, value: &ParamValue) -> Result<(), String> {
        let Some((min, max)) = self.range else {
            return Ok(());
        };
        let bad = |v: f64| !(min..=max).contains(&v);
        let integral = matches!(self.ty, ParamType::Int | ParamType::IntList);
        let allowed = if integral {
            format!("{min}..={max}")
        } else {
            format!("[{min}, {max}]")
        };
        let out_of_range = match value {
            ParamValue::Int(i) => bad(*i as f64).then(|| i.to_string()),
            ParamValue::Float(x) => bad(*x).then(|| x.to_string()),
            ParamValue::IntList(l) => l.iter().find(|i| bad(**i as f64)).map(|i| i.to_string()),
            ParamValue::FloatList(l) => l.iter().find(|x| bad(**x)).map(|x| x.to_string()),
            _ => None,
        };
        match out_of_range {
            None => Ok(()),
            Some(v) if matches!(value, ParamValue::IntList(_) | ParamValue::FloatList(_)) => {
                Err(format!("must hold values in {allowed}, got {v} in {value}"))
            }
            Some(v) => Err(format!("must be in {allowed}, got {v}")),
        }
    }

    /// A required parameter.
    pub fn required(name: &str, ty: ParamType, doc: &str) -> ParamSpec {
        ParamSpec {
            name: name.into(),
            ty,
            default: None,
            doc: doc.into(),
            range: None,
        }
    }

    /// A parameter with a default value.
    pub fn optional(name: &str, ty: ParamType, default: ParamValue, doc: &str) -> ParamSpec {
        ParamSpec {
            name: name.into(),
            ty,
            default: Some(default),
            doc: doc.into(),
            range: None,
        }
    }
}

/// The resolved parameters of one node: every declared parameter has a value of its type.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Params {
    values: Vec<(String, ParamValue)>,
}

impl Params {
    pub fn new() -> Params {
        Params::default()
    }

    pub fn set(&mut self, name: &str, value: ParamValue) {
        match self.values.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = value,
            None => self.values.push((name.to_string(), value)),
        }
    }

    pub fn with(mut self, name: &str, value: ParamValue) -> Params {
        self.set(name, value);
        self
    }

    pub fn get(&self, name: &str) -> Option<&ParamValue> {
        self.values.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &ParamValue)> {
        self.values.iter().map(|(n, v)| (n.as_str(), v))
    }

    fn typed<T>(
        &self,
        name: &str,
        want: &str,
        pick: impl Fn(&ParamValue) -> Option<T>,
    ) -> Result<T, String> {
        let v = self
            .get(name)
            .ok_or_else(|| format!("parameter \"{name}\" was not set"))?;
        pick(v).ok_or_else(|| format!("parameter \"{name}\" is {}, expected {want}", v.describe()))
    }

    pub fn bool(&self, name: &str) -> Result<bool, String> {
        self.typed(name, "a bool", |v| match v {
            ParamValue::Bool(b) => Some(*b),
            _ => None,
        })
    }

    pub fn int(&self, name: &str) -> Result<i64, String> {
        self.typed(name, "an integer", |v| match v {
            ParamValue::Int(i) => Some(*i),
            _ => None,
        })
    }

    pub fn float(&self, name: &str) -> Result<f64, String> {
        self.typed(name, "a float", |v| match v {
            ParamValue::Float(f) => Some(*f),
            ParamValue::Int(i) => Some(*i as f64),
            _ => None,
        })
    }

    pub fn str(&self, name: &str) -> Result<&str, String> {
        let v = self
            .get(name)
            .ok_or_else(|| format!("parameter \"{name}\" was not set"))?;
        match v {
            ParamValue::Str(s) => Ok(s),
            other => Err(format!(
                "parameter \"{name}\" is {}, expected a string",
                other.describe()
            )),
        }
    }

    pub fn int_list(&self, name: &str) -> Result<Vec<i64>, String> {
        self.typed(name, "a list of integers", |v| match v {
            ParamValue::IntList(l) => Some(l.clone()),
            _ => None,
        })
    }

    pub fn float_list(&self, name: &str) -> Result<Vec<f64>, String> {
        self.typed(name, "a list of floats", |v| match v {
            ParamValue::FloatList(l) => Some(l.clone()),
            ParamValue::IntList(l) => Some(l.iter().map(|&i| i as f64).collect()),
            _ => None,
        })
    }

    pub fn str_list(&self, name: &str) -> Result<Vec<String>, String> {
        self.typed(name, "a list of strings", |v| match v {
            ParamValue::StrList(l) => Some(l.clone()),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coercion_widens_ints_only() {
        assert_eq!(
            ParamValue::Int(3).coerce(ParamType::Float),
            Some(ParamValue::Float(3.0))
        );
        assert_eq!(ParamValue::Float(3.0).coerce(ParamType::Int), None);
        assert_eq!(ParamValue::Str("x".into()).coerce(ParamType::Int), None);
        assert_eq!(
            ParamValue::StrList(vec![]).coerce(ParamType::FloatList),
            Some(ParamValue::FloatList(vec![]))
        );
    }

    #[test]
    fn typed_getters_name_the_parameter() {
        let p = Params::new().with("depth", ParamValue::Str("fifty".into()));
        assert_eq!(
            p.int("depth").unwrap_err(),
            "parameter \"depth\" is string \"fifty\", expected an integer"
        );
        assert!(p.int("missing").unwrap_err().contains("not set"));
        assert_eq!(p.str("depth").unwrap(), "fifty");
    }

    #[test]
    fn display_is_toml() {
        assert_eq!(ParamValue::Str("a\"b".into()).to_string(), "\"a\\\"b\"");
        assert_eq!(ParamValue::Float(1.0).to_string(), "1.0");
        assert_eq!(ParamValue::IntList(vec![1, 2]).to_string(), "[1, 2]");
    }
}
