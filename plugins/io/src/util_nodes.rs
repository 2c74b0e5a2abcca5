//! `null_sink` (discards values) and `identity` (passes values on, optionally after a delay):
//! nodes for tests and for measuring the engine's own overhead.

use std::time::{Duration, Instant};

use plugin_sdk::{
    FrameInfo, Inputs, Node, NodeError, NodeKind, NodeSpec, Outputs, ParamSpec, ParamType,
    ParamValue, Params, PortKind, PortSpec,
};

pub fn null_sink_kind() -> NodeKind {
    let spec = NodeSpec::new(
        "null_sink",
        "Discards its input (counts frames); ends a branch of the graph",
    )
    .input(PortSpec::new("in", PortKind::Any, "any value; ignored"));
    NodeKind::new(spec, |_params| {
        Ok(Box::new(NullSink::default()) as Box<dyn Node>)
    })
}

/// The `null_sink` node.
#[derive(Debug, Default)]
pub struct NullSink {
    frames: u64,
}

impl NullSink {
    /// Frames received so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }
}

impl Node for NullSink {
    fn process(&mut self, _frame: &FrameInfo, _inputs: &Inputs) -> Result<Outputs, NodeError> {
        self.frames += 1;
        Ok(Outputs::new())
    }
}

pub fn identity_kind() -> NodeKind {
    let spec = NodeSpec::new(
        "identity",
        "Passes its input on unchanged (no copy), optionally after a fixed or random delay",
    )
    .input(PortSpec::new("in", PortKind::Any, "any value"))
    .output(PortSpec::new(
        "out",
        PortKind::Any,
        "the input value, same kind, same storage",
    ))
    .param(
        ParamSpec::optional(
            "delay_ms",
            ParamType::Float,
            ParamValue::Float(0.0),
            "fixed delay per frame in milliseconds",
        )
        .range(0.0, 1.0e9),
    )
    .param(
        ParamSpec::optional(
            "jitter_ms",
            ParamType::Float,
            ParamValue::Float(0.0),
            "extra delay per frame, uniformly random in [0, jitter_ms) milliseconds",
        )
        .range(0.0, 1.0e9),
    )
    .param(ParamSpec::optional(
        "seed",
        ParamType::Int,
        ParamValue::Int(0),
        "seed of the jitter's random numbers (deterministic xorshift)",
    ))
    .param(ParamSpec::optional(
        "spin",
        ParamType::Bool,
        ParamValue::Bool(false),
        "busy-wait instead of sleeping (precise short delays, for benchmarks)",
    ));
    NodeKind::new(spec, |params| {
        Ok(Box::new(Identity::from_params(params)?) as Box<dyn Node>)
    })
}

/// The `identity` node.
#[derive(Debug)]
pub struct Identity {
    delay_ms: f64,
    jitter_ms: f64,
    spin: bool,
    rng: XorShift64,
}

fn delay_param(params: &Params, name: &str) -> Result<f64, NodeError> {
    let v = params.float(name)?;
    if !v.is_finite() || v < 0.0 {
        return Err(NodeError::new(format!(
            "parameter \"{name}\" must be a number >= 0, got {v}"
        )));
    }
    // Far beyond any sensible delay; also keeps Duration::from_secs_f64 in range.
    if v > 1.0e9 {
        return Err(NodeError::new(format!(
            "parameter \"{name}\" must be <= 1e9 milliseconds, got {v}"
        )));
    }
    Ok(v)
}

impl Identity {
    pub fn from_params(params: &Params) -> Result<Identity, NodeError> {
        Ok(Identity {
            delay_ms: delay_param(params, "delay_ms")?,
            jitter_ms: delay_param(params, "jitter_ms")?,
            spin: params.bool("spin")?,
            rng: XorShift64::new(params.int("seed")? as u64),
        })
    }

    /// The delay of the next frame in milliseconds (advances the random numbers when there is
    /// jitter).
    pub fn next_delay_ms(&mut self) -> f64 {
        if self.jitter_ms > 0.0 {
            self.delay_ms + self.jitter_ms * self.rng.next_f64()
        } else {
            self.delay_ms
        }
    }

    fn wait(&self, ms: f64) {
        let d = Duration::from_secs_f64(ms / 1000.0);
        if self.spin {
            let start = Instant::now();
            while start.elapsed() < d {
                std::hint::spin_loop();
            }
        } else {
            std::thread::sleep(d);
        }
    }
}

impl Node for Identity {
    fn process(&mut self, _frame: &FrameInfo, inputs: &Inputs) -> Result<Outputs, NodeError> {
        let value = inputs.value("in")?.clone();
        // No timing calls at all when there is no delay: this node measures engine overhead.
        if self.delay_ms > 0.0 || self.jitter_ms > 0.0 {
            let ms = self.next_delay_ms();
            if ms > 0.0 {
                self.wait(ms);
            }
        }
        Ok(Outputs::one("out", value))
    }
}

/// A small deterministic PRNG (xorshift64, state scrambled from the seed with splitmix64 so
/// that every seed, 0 included, gives a good sequence).
#[derive(Clone, Debug)]
pub struct XorShift64 {
    state: u64,
}

impl XorShift64 {
    pub fn new(seed: u64) -> XorShift64 {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        XorShift64 {
            state: if z == 0 { 0x2545_F491_4F6C_DD1D } else { z },
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.state = x;
        x
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use plugin_sdk::{Instances, Tensor, Value};

    fn params(delay: f64, jitter: f64, seed: i64, spin: bool) -> Params {
        Params::new()
            .with("delay_ms", ParamValue::Float(delay))
            .with("jitter_ms", ParamValue::Float(jitter))
            .with("seed", ParamValue::Int(seed))
            .with("spin", ParamValue::Bool(spin))
    }

    fn inputs(v: Value) -> Inputs {
        let mut i = Inputs::new();
        i.push("in", Some(v));
        i
    }

    #[test]
    fn identity_passes_the_same_storage() {
        let mut node = (identity_kind().create)(&params(0.0, 0.0, 0, false)).unwrap();
        let t = Tensor::from_vec(&[2, 2, 3], vec![5u8; 12]).unwrap();
        let out = node
            .process(&FrameInfo::default(), &inputs(Value::image(t.clone())))
            .unwrap();
        let v = out.get("out").unwrap();
        assert_eq!(v.kind(), PortKind::Image);
        assert!(v.get("image").unwrap().shares_storage_with(&t));

        let inst = Instances {
            boxes: vec![[0.0, 1.0, 2.0, 3.0]],
            scores: vec![0.5],
            classes: vec![2],
        }
        .to_value()
        .unwrap();
        let out = node
            .process(&FrameInfo::default(), &inputs(inst.clone()))
            .unwrap();
        let v = out.get("out").unwrap();
        assert_eq!(v.kind(), PortKind::Instances);
        for (name, t) in inst.tensors() {
            assert!(v.get(name).unwrap().shares_storage_with(t));
        }
    }

    #[test]
    fn delays_wait_and_jitter_is_deterministic() {
        for spin in [false, true] {
            let mut node = Identity::from_params(&params(2.0, 0.0, 0, spin)).unwrap();
            let start = Instant::now();
            let t = Tensor::from_vec(&[1], vec![1.0f32]).unwrap();
            node.process(&FrameInfo::default(), &inputs(Value::single(t)))
                .unwrap();
            assert!(start.elapsed() >= Duration::from_millis(2));
        }
        let delays = |seed| {
            let mut node = Identity::from_params(&params(1.0, 4.0, seed, false)).unwrap();
            (0..50).map(|_| node.next_delay_ms()).collect::<Vec<f64>>()
        };
        let a = delays(7);
        assert_eq!(a, delays(7));
        assert_ne!(a, delays(8));
        assert!(a.iter().all(|&d| (1.0..5.0).contains(&d)));
        let mean = a.iter().sum::<f64>() / a.len() as f64;
        assert!((2.0..4.0).contains(&mean), "mean {mean}");
    }

    #[test]
    fn negative_delays_are_refused() {
        let err = Identity::from_params(&params(-1.0, 0.0, 0, false)).unwrap_err();
        assert_eq!(
            err.message(),
            "parameter \"delay_ms\" must be a number >= 0, got -1"
        );
        let err = Identity::from_params(&params(0.0, -0.5, 0, false)).unwrap_err();
        assert!(err.message().starts_with("parameter \"jitter_ms\""));
        assert!(Identity::from_params(&params(f64::NAN, 0.0, 0, false)).is_err());
    }

    #[test]
    fn null_sink_counts_frames() {
        let mut sink = NullSink::default();
        let t = Tensor::from_vec(&[1], vec![1i64]).unwrap();
        for _ in 0..3 {
            sink.process(&FrameInfo::default(), &inputs(Value::single(t.clone())))
                .unwrap();
        }
        assert_eq!(sink.frames(), 3);
        let mut node = (null_sink_kind().create)(&Params::new()).unwrap();
        assert!(node
            .process(&FrameInfo::default(), &inputs(Value::single(t)))
            .unwrap()
            .ports()
            .next()
            .is_none());
    }

    #[test]
    fn xorshift_covers_the_unit_interval() {
        let mut r = XorShift64::new(0);
        let xs: Vec<f64> = (0..1000).map(|_| r.next_f64()).collect();
        assert!(xs.iter().all(|&x| (0.0..1.0).contains(&x)));
        assert!(xs.iter().any(|&x| x < 0.1) && xs.iter().any(|&x| x > 0.9));
    }
}
