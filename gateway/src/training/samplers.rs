//! What a hyperparameter search tries next (spec/training.md §1.4, §2.10; Katib and Optuna
//! are the anchors): the search space, the samplers (random, grid, and TPE through the
//! `tpe` crate), and the median stopping rule. Pure: a trial's parameters are a function of
//! the search's settings, the trial's number and the results told so far, so a restarted
//! gateway asks again and gets the same answer, and nothing here needs a store.
//!
//! ```text
//! random  seeded per trial (seed, number): uniform, log-uniform, one of the choices
//! grid    trial N = the N-th point of the cartesian product (first parameter slowest)
//! tpe     the first n_startup_trials as random; then one `tpe::TpeOptimizer` per
//!         parameter, told every finished trial (the objective as a loss), asked once
//! median  after min_steps reports, stop a trial whose best so far is worse than the
//!         median of the finished trials' running averages up to the same step
//! ```

use std::collections::{BTreeMap, BTreeSet};

use rand10::rngs::StdRng;
use rand10::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Searched hyperparameters of one search.
pub const MAX_PARAMETERS: usize = 20;
/// Choices of a categorical parameter.
pub const MAX_CHOICES: usize = 100;
/// Points of a grid.
pub const MAX_GRID: u64 = 10_000;
/// The TPE defaults: Optuna's `n_startup_trials`, the crate's `gamma` and `candidates`.
pub const TPE_DEFAULTS: (u32, f64, u32) = (10, 0.1, 24);
/// Katib's median stop defaults: `start_step` (our `min_steps`), `min_trials_required`.
pub const MEDIAN_DEFAULTS: (u32, u32) = (4, 3);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Max,
    Min,
}

impl Direction {
    /// Whether `a` is better than `b`.
    pub fn better(self, a: f64, b: f64) -> bool {
        match self {
            Direction::Max => a > b,
            Direction::Min => a < b,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    Float,
    Integer,
    Categorical,
}

/// A searched hyperparameter, as the request gives it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParamSpec {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: ParamType,
    /// `[low, high]`, both included (float and integer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<Vec<f64>>,
    /// Sample on a log scale (float and integer; low > 0).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub log: bool,
    /// The values (categorical).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub choices: Vec<Value>,
    /// Values are low + k × step (float and integer); a float's grid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<f64>,
    /// A float's grid: this many points from low to high (evenly, or geometrically on a
    /// log scale).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grid_points: Option<u32>,
}

impl ParamSpec {
    fn bounds(&self) -> (f64, f64) {
        let r = self.range.as_deref().unwrap_or(&[0.0, 0.0]);
        (r[0], r[1])
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    Random,
    Grid,
    Tpe,
}

/// The sampler's settings, by the names their libraries use: `seed` for every sampler;
/// Optuna's `n_startup_trials`, the `tpe` crate's `gamma` and `candidates` for TPE.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlgorithmSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_startup_trials: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gamma: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidates: Option<u32>,
}

/// Early stopping: Katib's and Vizier's median rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EarlyStopping {
    /// `median`, the one rule there is.
    pub rule: String,
    /// Reports of the objective a trial makes before the rule looks at it (default 4).
    #[serde(default = "default_min_steps")]
    pub min_steps: u32,
    /// Finished trials the median is taken over before the rule stops any (default 3).
    #[serde(default = "default_start_after")]
    pub start_after_trials: u32,
}

fn default_min_steps() -> u32 {
    MEDIAN_DEFAULTS.0
}

fn default_start_after() -> u32 {
    MEDIAN_DEFAULTS.1
}

/// The search space and the sampler's settings checked: an error names its field.
pub fn check(
    params: &[ParamSpec],
    algorithm: Algorithm,
    settings: &AlgorithmSettings,
) -> Result<(), String> {
    if params.is_empty() || params.len() > MAX_PARAMETERS {
        return Err(format!(
            "parameters: {} given; search 1 to {MAX_PARAMETERS}",
            params.len()
        ));
    }
    let mut seen = BTreeSet::new();
    for (i, p) in params.iter().enumerate() {
        let f = format!("parameters[{i}]");
        if !seen.insert(p.name.as_str()) {
            return Err(format!("{f}.name: {:?} is given twice", p.name));
        }
        check_param(&f, p, algorithm)?;
    }
    if algorithm == Algorithm::Grid {
        let n = grid_size(params);
        if n > MAX_GRID {
            return Err(format!(
                "parameters: the grid has {n} points; at most {MAX_GRID}"
            ));
        }
    }
    if algorithm != Algorithm::Tpe {
        for (name, given) in [
            ("n_startup_trials", settings.n_startup_trials.is_some()),
            ("gamma", settings.gamma.is_some()),
            ("candidates", settings.candidates.is_some()),
        ] {
            if given {
                return Err(format!(
                    "algorithm_settings.{name}: a TPE setting; this search is {}",
                    algorithm_name(algorithm)
                ));
            }
        }
    }
    if let Some(n) = settings.n_startup_trials
        && !(1..=100).contains(&n)
    {
        return Err(format!(
            "algorithm_settings.n_startup_trials: {n}; 1 to 100"
        ));
    }
    if let Some(g) = settings.gamma
        && !(g > 0.0 && g <= 1.0)
    {
        return Err(format!(
            "algorithm_settings.gamma: {g}; more than 0, at most 1"
        ));
    }
    if let Some(c) = settings.candidates
        && !(1..=1000).contains(&c)
    {
        return Err(format!("algorithm_settings.candidates: {c}; 1 to 1000"));
    }
    Ok(())
}

pub fn algorithm_name(a: Algorithm) -> &'static str {
    match a {
        Algorithm::Random => "random",
        Algorithm::Grid => "grid",
        Algorithm::Tpe => "tpe",
    }
}

fn check_param(f: &str, p: &ParamSpec, algorithm: Algorithm) -> Result<(), String> {
    super::schema::check_name(&format!("{f}.name"), &p.name)?;
    match p.kind {
        ParamType::Categorical => {
            if p.range.is_some() {
                return Err(format!(
                    "{f}.range: {} is categorical; give choices, not a range",
                    p.name
                ));
            }
            for (k, set) in [
                ("log", p.log),
                ("step", p.step.is_some()),
                ("grid_points", p.grid_points.is_some()),
            ] {
                if set {
                    return Err(format!("{f}.{k}: not for a categorical parameter"));
                }
            }
            if p.choices.is_empty() || p.choices.len() > MAX_CHOICES {
                return Err(format!(
                    "{f}.choices: {} given; 1 to {MAX_CHOICES}",
                    p.choices.len()
                ));
            }
            let mut seen = BTreeSet::new();
            for c in &p.choices {
                if !matches!(c, Value::String(_) | Value::Number(_) | Value::Bool(_)) {
                    return Err(format!(
                        "{f}.choices: {c} is not a string, a number or a boolean"
                    ));
                }
                if !seen.insert(c.to_string()) {
                    return Err(format!("{f}.choices: {c} is given twice"));
                }
            }
        }
        ParamType::Float | ParamType::Integer => {
            if !p.choices.is_empty() {
                return Err(format!(
                    "{f}.choices: {} is a range; choices are for categorical parameters",
                    p.name
                ));
            }
            let r = p
                .range
                .as_deref()
                .ok_or_else(|| format!("{f}.range: give [low, high]"))?;
            let [lo, hi] = r else {
                return Err(format!("{f}.range: [low, high], two numbers"));
            };
            let (lo, hi) = (*lo, *hi);
            if !lo.is_finite() || !hi.is_finite() {
                return Err(format!("{f}.range: finite numbers"));
            }
            let integer = p.kind == ParamType::Integer;
            if integer
                && (lo.fract() != 0.0 || hi.fract() != 0.0 || lo.abs() > 1e15 || hi.abs() > 1e15)
            {
                return Err(format!("{f}.range: whole numbers for an integer parameter"));
            }
            if if integer { lo > hi } else { lo >= hi } {
                return Err(format!("{f}.range: [{lo}, {hi}]; low must be below high"));
            }
            if p.log && lo <= 0.0 {
                return Err(format!("{f}.range: a log scale needs low > 0"));
            }
            if let Some(s) = p.step {
                if !(s.is_finite() && s > 0.0) || (integer && s.fract() != 0.0) {
                    return Err(format!(
                        "{f}.step: {s}; a positive {}",
                        if integer { "whole number" } else { "number" }
                    ));
                }
                if p.log {
                    return Err(format!("{f}.step: not with log"));
                }
                if s > hi - lo && hi > lo {
                    return Err(format!("{f}.step: {s} is wider than the range"));
                }
            }
            if let Some(n) = p.grid_points {
                if integer {
                    return Err(format!(
                        "{f}.grid_points: an integer's grid is every value (or every step)"
                    ));
                }
                if p.step.is_some() {
                    return Err(format!(
                        "{f}.grid_points: give step or grid_points, not both"
                    ));
                }
                if !(2..=1000).contains(&n) {
                    return Err(format!("{f}.grid_points: {n}; 2 to 1000"));
                }
            }
            if algorithm == Algorithm::Grid
                && p.kind == ParamType::Float
                && p.step.is_none()
                && p.grid_points.is_none()
            {
                return Err(format!(
                    "{f}.step: a grid over a float needs step or grid_points"
                ));
            }
        }
    }
    Ok(())
}

/// The values a parameter takes on a grid.
fn grid_values(p: &ParamSpec) -> Vec<Value> {
    let (lo, hi) = p.bounds();
    match p.kind {
        ParamType::Categorical => p.choices.clone(),
        ParamType::Integer => {
            let step = p.step.unwrap_or(1.0) as i64;
            let (lo, hi) = (lo as i64, hi as i64);
            (0..)
                .map(|k| lo + k * step)
                .take_while(|v| *v <= hi)
                .take(MAX_GRID as usize + 1)
                .map(Value::from)
                .collect()
        }
        ParamType::Float => match (p.step, p.grid_points) {
            (Some(s), _) => (0..)
                .map(|k| lo + k as f64 * s)
                .take_while(|v| *v <= hi + s * 1e-9)
                .take(MAX_GRID as usize + 1)
                .map(|v| Value::from(tidy(v).min(hi)))
                .collect(),
            (None, Some(n)) => (0..n)
                .map(|k| {
                    let t = f64::from(k) / f64::from(n - 1);
                    let v = if p.log {
                        (lo.ln() + t * (hi.ln() - lo.ln())).exp()
                    } else {
                        lo + t * (hi - lo)
                    };
                    Value::from(v.clamp(lo, hi))
                })
                .collect(),
            (None, None) => Vec::new(),
        },
    }
}

/// Points of the grid over `params` (saturating).
pub fn grid_size(params: &[ParamSpec]) -> u64 {
    params
        .iter()
        .fold(1u64, |n, p| n.saturating_mul(grid_values(p).len() as u64))
}

/// A finished trial, as the samplers are told: its parameters and objective.
#[derive(Debug, Clone)]
pub struct Told<'a> {
    pub params: &'a BTreeMap<String, Value>,
    pub objective: f64,
}

/// What to tell the samplers of finished trials held as (parameters, objective).
pub fn told(done: &[(BTreeMap<String, Value>, f64)]) -> Vec<Told<'_>> {
    done.iter()
        .map(|(params, objective)| Told {
            params,
            objective: *objective,
        })
        .collect()
}

/// The search's settings the samplers read.
#[derive(Debug, Clone)]
pub struct Sampler<'a> {
    pub params: &'a [ParamSpec],
    pub algorithm: Algorithm,
    pub settings: &'a AlgorithmSettings,
    pub direction: Direction,
}

impl Sampler<'_> {
    /// The parameters of trial `number`, given the finished trials (in any order); None
    /// when a grid has no point left.
    pub fn suggest(&self, number: u32, told: &[Told]) -> Option<BTreeMap<String, Value>> {
        let mut rng = trial_rng(self.settings.seed.unwrap_or(0), number);
        match self.algorithm {
            Algorithm::Random => Some(self.random(&mut rng)),
            Algorithm::Grid => self.grid(number),
            Algorithm::Tpe => {
                let startup = self.settings.n_startup_trials.unwrap_or(TPE_DEFAULTS.0) as usize;
                if told.len() < startup {
                    return Some(self.random(&mut rng));
                }
                match self.tpe(&mut rng, told) {
                    Ok(p) => Some(p),
                    Err(e) => {
                        tracing::warn!(error = %e, "TPE could not suggest; sampling at random");
                        Some(self.random(&mut rng))
                    }
                }
            }
        }
    }

    fn random(&self, rng: &mut StdRng) -> BTreeMap<String, Value> {
        self.params
            .iter()
            .map(|p| {
                let (lo, hi) = p.bounds();
                let v = match p.kind {
                    ParamType::Categorical => {
                        p.choices[rng.random_range(0..p.choices.len())].clone()
                    }
                    ParamType::Integer if !p.log => {
                        let step = p.step.unwrap_or(1.0) as i64;
                        let n = (hi as i64 - lo as i64) / step;
                        Value::from(lo as i64 + rng.random_range(0..=n) * step)
                    }
                    ParamType::Integer => {
                        let x = rng.random_range(lo.ln()..(hi + 1.0).ln()).exp();
                        from_internal(p, x.floor())
                    }
                    ParamType::Float if p.log => {
                        from_internal(p, rng.random_range(lo.ln()..=hi.ln()))
                    }
                    ParamType::Float => from_internal(p, rng.random_range(lo..=hi)),
                };
                (p.name.clone(), v)
            })
            .collect()
    }

    fn grid(&self, number: u32) -> Option<BTreeMap<String, Value>> {
        let axes: Vec<Vec<Value>> = self.params.iter().map(grid_values).collect();
        let mut rest = u64::from(number);
        if rest >= grid_size(self.params) {
            return None;
        }
        let mut out = BTreeMap::new();
        // The last parameter varies fastest.
        for (p, axis) in self.params.iter().zip(&axes).rev() {
            let n = axis.len() as u64;
            out.insert(p.name.clone(), axis[(rest % n) as usize].clone());
            rest /= n;
        }
        Some(out)
    }

    fn tpe(&self, rng: &mut StdRng, told: &[Told]) -> Result<BTreeMap<String, Value>, String> {
        let gamma = self.settings.gamma.unwrap_or(TPE_DEFAULTS.1);
        let candidates = self.settings.candidates.unwrap_or(TPE_DEFAULTS.2) as usize;
        let mut out = BTreeMap::new();
        for p in self.params {
            let (estimator, range) = match p.kind {
                ParamType::Categorical => (
                    tpe::histogram_estimator(),
                    tpe::categorical_range(p.choices.len()),
                ),
                _ => {
                    let (a, b) = internal_range(p);
                    (tpe::parzen_estimator(), tpe::range(a, b))
                }
            };
            let range = range.map_err(|e| format!("{}: {e:?}", p.name))?;
            let mut opt = tpe::TpeOptimizerBuilder::new()
                .gamma(gamma)
                .candidates(candidates)
                .build(estimator, range)
                .map_err(|e| format!("{}: {e:?}", p.name))?;
            for t in told {
                let Some(x) = t.params.get(&p.name).and_then(|v| to_internal(p, v)) else {
                    continue;
                };
                let x = x.clamp(range.start(), range.end().next_down());
                let loss = match self.direction {
                    Direction::Max => -t.objective,
                    Direction::Min => t.objective,
                };
                if loss.is_finite() {
                    opt.tell(x, loss)
                        .map_err(|e| format!("{}: {e:?}", p.name))?;
                }
            }
            let x = opt.ask(rng).map_err(|e| format!("{}: {e:?}", p.name))?;
            out.insert(p.name.clone(), from_internal(p, x));
        }
        Ok(out)
    }
}

/// A trial's own random stream: the same for the same seed and number.
fn trial_rng(seed: u64, number: u32) -> StdRng {
    StdRng::seed_from_u64(seed ^ u64::from(number).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// Where TPE works for a numeric parameter: the range, on a log scale when asked; an
/// integer's widened by a half on each side so that every value has its share.
fn internal_range(p: &ParamSpec) -> (f64, f64) {
    let (lo, hi) = p.bounds();
    match (p.kind, p.log) {
        (ParamType::Integer, false) => (lo - 0.5, hi + 0.5),
        (ParamType::Integer, true) => ((lo - 0.5).max(lo / 2.0).ln(), (hi + 0.5).ln()),
        (_, true) => (lo.ln(), hi.ln()),
        _ => (lo, hi),
    }
}

fn to_internal(p: &ParamSpec, v: &Value) -> Option<f64> {
    match p.kind {
        ParamType::Categorical => p.choices.iter().position(|c| c == v).map(|i| i as f64),
        _ => {
            let x = v.as_f64()?;
            Some(if p.log { x.ln() } else { x })
        }
    }
}

/// A value from where the samplers work: back from the log scale, rounded to the step
/// (or to a whole number), within the range.
fn from_internal(p: &ParamSpec, x: f64) -> Value {
    let (lo, hi) = p.bounds();
    match p.kind {
        ParamType::Categorical => {
            let i = (x.floor().max(0.0) as usize).min(p.choices.len() - 1);
            p.choices[i].clone()
        }
        ParamType::Integer => {
            let v = if p.log { x.exp() } else { x };
            let step = p.step.unwrap_or(1.0);
            let k = ((v - lo) / step).round().max(0.0);
            let mut v = lo + k * step;
            while v > hi {
                v -= step;
            }
            Value::from(v as i64)
        }
        ParamType::Float => {
            let v = if p.log { x.exp() } else { x };
            let v = match p.step {
                Some(s) => {
                    let v = tidy(lo + ((v - lo) / s).round() * s);
                    if v > hi { tidy(v - s) } else { v }
                }
                None => v,
            };
            Value::from(v.clamp(lo, hi))
        }
    }
}

/// `lo + k × step` without the float noise (`0.30000000000000004` → `0.3`).
fn tidy(v: f64) -> f64 {
    if v.abs() < 1e6 {
        (v * 1e12).round() / 1e12
    } else {
        v
    }
}

/// One report of a trial's objective: its step (or its place among the reports) and value.
pub type Report = (i64, f64);

/// Why the median rule stops a trial.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub step: i64,
    pub best: f64,
    pub median: f64,
}

/// The median stopping rule (Vizier; Katib's `medianstop`): once the trial has made
/// `min_steps` reports, it stops if its best value so far is worse than the median of the
/// finished trials' running averages up to the same step, taken over at least
/// `start_after_trials` of them (those that reported by then).
pub fn median_stop(
    own: &[Report],
    finished: &[Vec<Report>],
    rule: &EarlyStopping,
    direction: Direction,
) -> Option<Verdict> {
    if own.len() < rule.min_steps.max(1) as usize {
        return None;
    }
    let step = own.iter().map(|r| r.0).max()?;
    let best = own
        .iter()
        .map(|r| r.1)
        .reduce(|a, b| if direction.better(b, a) { b } else { a })?;
    let mut averages: Vec<f64> = finished
        .iter()
        .filter_map(|t| {
            let upto: Vec<f64> = t.iter().filter(|r| r.0 <= step).map(|r| r.1).collect();
            (!upto.is_empty()).then(|| upto.iter().sum::<f64>() / upto.len() as f64)
        })
        .filter(|v| v.is_finite())
        .collect();
    if averages.len() < rule.start_after_trials.max(1) as usize {
        return None;
    }
    averages.sort_by(f64::total_cmp);
    let n = averages.len();
    let median = if n % 2 == 1 {
        averages[n / 2]
    } else {
        (averages[n / 2 - 1] + averages[n / 2]) / 2.0
    };
    direction
        .better(median, best)
        .then_some(Verdict { step, best, median })
}

/// A trial's reports of the objective, from its metric rows in the order they came: the
/// step it gave, or its place among the reports (1, 2, …).
pub fn reports(values: impl IntoIterator<Item = (Option<i64>, f64)>) -> Vec<Report> {
    values
        .into_iter()
        .enumerate()
        .map(|(i, (step, v))| (step.unwrap_or(i as i64 + 1), v))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn params(v: Value) -> Vec<ParamSpec> {
        serde_json::from_value(v).unwrap()
    }

    fn xy() -> Vec<ParamSpec> {
        params(json!([
            {"name": "x", "type": "float", "range": [0, 1]},
            {"name": "y", "type": "float", "range": [0, 1]}
        ]))
    }

    fn score(p: &BTreeMap<String, Value>) -> f64 {
        let x = p["x"].as_f64().unwrap();
        let y = p["y"].as_f64().unwrap();
        -(x - 0.3).powi(2) - (y - 0.7).powi(2)
    }

    /// `n` trials of `f` in a row, each told the ones before; each point asked twice, to
    /// see it is the same.
    fn optimise(
        smp: &Sampler,
        n: u32,
        f: impl Fn(&BTreeMap<String, Value>) -> f64,
    ) -> Vec<(BTreeMap<String, Value>, f64)> {
        let mut done = Vec::new();
        for i in 0..n {
            let a = smp.suggest(i, &told(&done)).unwrap();
            assert_eq!(a, smp.suggest(i, &told(&done)).unwrap(), "deterministic");
            let v = f(&a);
            done.push((a, v));
        }
        done
    }

    fn sampler<'a>(
        p: &'a [ParamSpec],
        algorithm: Algorithm,
        settings: &'a AlgorithmSettings,
    ) -> Sampler<'a> {
        Sampler {
            params: p,
            algorithm,
            settings,
            direction: Direction::Max,
        }
    }

    #[test]
    fn random_is_seeded_per_trial_and_keeps_to_the_space() {
        let p = params(json!([
            {"name": "lr", "type": "float", "range": [1e-5, 1e-1], "log": true},
            {"name": "layers", "type": "integer", "range": [1, 4]},
            {"name": "bs", "type": "integer", "range": [16, 64], "step": 16},
            {"name": "opt", "type": "categorical", "choices": ["sgd", "adam"]},
            {"name": "drop", "type": "float", "range": [0, 0.5], "step": 0.1}
        ]));
        let s = AlgorithmSettings {
            seed: Some(7),
            ..Default::default()
        };
        let smp = sampler(&p, Algorithm::Random, &s);
        let mut seen_layers = BTreeSet::new();
        let mut log_small = 0;
        for n in 0..200 {
            let a = smp.suggest(n, &[]).unwrap();
            assert_eq!(
                a,
                smp.suggest(n, &[]).unwrap(),
                "the same trial, the same values"
            );
            let lr = a["lr"].as_f64().unwrap();
            assert!((1e-5..=1e-1).contains(&lr), "{a:?}");
            if lr < 1e-3 {
                log_small += 1;
            }
            let l = a["layers"].as_i64().unwrap();
            assert!((1..=4).contains(&l));
            seen_layers.insert(l);
            assert!(
                [16, 32, 48, 64].contains(&a["bs"].as_i64().unwrap()),
                "{a:?}"
            );
            assert!(["sgd", "adam"].contains(&a["opt"].as_str().unwrap()));
            let d = a["drop"].as_f64().unwrap();
            assert!(
                (d * 10.0 - (d * 10.0).round()).abs() < 1e-9 && d <= 0.5,
                "{d}"
            );
        }
        assert_eq!(seen_layers.len(), 4);
        // Log-uniform: half the mass below 1e-3.
        assert!((60..=140).contains(&log_small), "{log_small}");
        let other = AlgorithmSettings {
            seed: Some(8),
            ..Default::default()
        };
        assert_ne!(
            smp.suggest(0, &[]),
            sampler(&p, Algorithm::Random, &other).suggest(0, &[])
        );
    }

    #[test]
    fn grid_walks_the_cartesian_product_then_ends() {
        let p = params(json!([
            {"name": "a", "type": "categorical", "choices": ["x", "y"]},
            {"name": "b", "type": "float", "range": [0, 1], "grid_points": 3},
            {"name": "c", "type": "integer", "range": [1, 2]}
        ]));
        let s = AlgorithmSettings::default();
        assert_eq!(grid_size(&p), 12);
        let smp = sampler(&p, Algorithm::Grid, &s);
        let all: Vec<_> = (0..12).map(|n| smp.suggest(n, &[]).unwrap()).collect();
        assert_eq!(
            all[0],
            BTreeMap::from([
                ("a".into(), json!("x")),
                ("b".into(), json!(0.0)),
                ("c".into(), json!(1))
            ])
        );
        assert_eq!(all[1]["c"], json!(2));
        assert_eq!(all[2]["b"], json!(0.5));
        assert_eq!(
            all[11],
            BTreeMap::from([
                ("a".into(), json!("y")),
                ("b".into(), json!(1.0)),
                ("c".into(), json!(2))
            ])
        );
        let distinct: BTreeSet<String> = all.iter().map(|m| format!("{m:?}")).collect();
        assert_eq!(distinct.len(), 12);
        assert_eq!(smp.suggest(12, &[]), None);
        // A float's step.
        let p = params(json!([{"name": "f", "type": "float", "range": [0.1, 0.3], "step": 0.1}]));
        assert_eq!(grid_size(&p), 3);
    }

    #[test]
    fn tpe_beats_random_on_a_known_function() {
        let p = xy();
        let s = AlgorithmSettings {
            seed: Some(3),
            n_startup_trials: Some(5),
            ..Default::default()
        };
        let run = |algorithm| {
            let smp = sampler(&p, algorithm, &s);
            let done = optimise(&smp, 40, score);
            let best = done.iter().map(|d| d.1).fold(f64::MIN, f64::max);
            // How good its later points are on average: TPE's gather near the optimum.
            let late = done[20..].iter().map(|d| d.1).sum::<f64>() / 20.0;
            (best, late)
        };
        let (tpe, tpe_late) = run(Algorithm::Tpe);
        let (_, random_late) = run(Algorithm::Random);
        assert!(tpe > -0.01, "TPE's best: {tpe}");
        assert!(
            tpe_late > random_late,
            "TPE's later trials {tpe_late} vs random's {random_late}"
        );
    }

    #[test]
    fn tpe_handles_integers_categories_and_log_scales() {
        let p = params(json!([
            {"name": "lr", "type": "float", "range": [1e-4, 1], "log": true},
            {"name": "n", "type": "integer", "range": [1, 8], "log": true},
            {"name": "k", "type": "integer", "range": [0, 10], "step": 5},
            {"name": "opt", "type": "categorical", "choices": ["sgd", "adam", "rms"]}
        ]));
        let s = AlgorithmSettings {
            seed: Some(1),
            n_startup_trials: Some(3),
            ..Default::default()
        };
        let smp = Sampler {
            direction: Direction::Min,
            ..sampler(&p, Algorithm::Tpe, &s)
        };
        let done = optimise(&smp, 30, |a| {
            let lr = a["lr"].as_f64().unwrap();
            let n_ = a["n"].as_i64().unwrap();
            let k = a["k"].as_i64().unwrap();
            assert!((1e-4..=1.0).contains(&lr) && (1..=8).contains(&n_), "{a:?}");
            assert!([0, 5, 10].contains(&k), "{a:?}");
            let opt = a["opt"].as_str().unwrap();
            (lr.log10() + 2.0).abs() + if opt == "adam" { 0.0 } else { 1.0 } + n_ as f64
        });
        let best = done.iter().map(|d| d.1).fold(f64::MAX, f64::min);
        assert!(best < 2.5, "{best}");
    }

    #[test]
    fn the_space_is_checked_field_by_field() {
        let s = AlgorithmSettings::default();
        let bad = |v: Value, a: Algorithm, field: &str| {
            let e = check(&params(v), a, &s).unwrap_err();
            assert!(e.starts_with(field), "{field} not first in {e:?}");
        };
        bad(
            json!([{"name": "c", "type": "categorical", "choices": [1], "range": [0, 1]}]),
            Algorithm::Random,
            "parameters[0].range",
        );
        bad(
            json!([{"name": "c", "type": "categorical", "choices": []}]),
            Algorithm::Random,
            "parameters[0].choices",
        );
        bad(
            json!([{"name": "c", "type": "categorical", "choices": [1, 1]}]),
            Algorithm::Random,
            "parameters[0].choices",
        );
        bad(
            json!([{"name": "f", "type": "float"}]),
            Algorithm::Random,
            "parameters[0].range",
        );
        bad(
            json!([{"name": "f", "type": "float", "range": [1, 1]}]),
            Algorithm::Random,
            "parameters[0].range",
        );
        bad(
            json!([{"name": "f", "type": "float", "range": [0, 1], "log": true}]),
            Algorithm::Random,
            "parameters[0].range",
        );
        bad(
            json!([{"name": "i", "type": "integer", "range": [0.5, 2]}]),
            Algorithm::Random,
            "parameters[0].range",
        );
        bad(
            json!([{"name": "f", "type": "float", "range": [0, 1]}]),
            Algorithm::Grid,
            "parameters[0].step",
        );
        bad(
            json!([{"name": "f", "type": "float", "range": [0, 1], "choices": [1]}]),
            Algorithm::Random,
            "parameters[0].choices",
        );
        bad(
            json!([{"name": "x y", "type": "float", "range": [0, 1]}]),
            Algorithm::Random,
            "parameters[0].name",
        );
        bad(
            json!([{"name": "x", "type": "float", "range": [0, 1]}, {"name": "x", "type": "float", "range": [0, 1]}]),
            Algorithm::Random,
            "parameters[1].name",
        );
        bad(json!([]), Algorithm::Random, "parameters");
        bad(
            json!([{"name": "i", "type": "integer", "range": [0, 100000]}, {"name": "j", "type": "integer", "range": [0, 100000]}]),
            Algorithm::Grid,
            "parameters",
        );
        let tpe_only = AlgorithmSettings {
            gamma: Some(0.2),
            ..Default::default()
        };
        let ok = params(json!([{"name": "x", "type": "float", "range": [0, 1]}]));
        assert!(
            check(&ok, Algorithm::Random, &tpe_only)
                .unwrap_err()
                .starts_with("algorithm_settings.gamma")
        );
        assert!(check(&ok, Algorithm::Tpe, &tpe_only).is_ok());
        let bad_gamma = AlgorithmSettings {
            gamma: Some(1.5),
            ..Default::default()
        };
        assert!(
            check(&ok, Algorithm::Tpe, &bad_gamma)
                .unwrap_err()
                .starts_with("algorithm_settings.gamma")
        );
    }

    #[test]
    fn the_median_rule_stops_what_is_worse_than_the_median() {
        let rule = EarlyStopping {
            rule: "median".into(),
            min_steps: 2,
            start_after_trials: 2,
        };
        let finished = vec![
            vec![(1, 0.5), (2, 0.7), (3, 0.9)],
            vec![(1, 0.4), (2, 0.6), (3, 0.8)],
            vec![(1, 0.6), (2, 0.8), (3, 1.0)],
        ];
        // Too few reports yet.
        assert_eq!(
            median_stop(&[(1, 0.0)], &finished, &rule, Direction::Max),
            None
        );
        // Running averages to step 2: 0.6, 0.5, 0.7 → median 0.6; best 0.2 is worse.
        let v = median_stop(&[(1, 0.1), (2, 0.2)], &finished, &rule, Direction::Max).unwrap();
        assert_eq!(v.step, 2);
        assert!((v.median - 0.6).abs() < 1e-12 && v.best == 0.2, "{v:?}");
        // As good as the median: goes on.
        assert_eq!(
            median_stop(&[(1, 0.1), (2, 0.65)], &finished, &rule, Direction::Max),
            None
        );
        // Minimising, the same numbers: a low best is good.
        assert_eq!(
            median_stop(&[(1, 0.1), (2, 0.2)], &finished, &rule, Direction::Min),
            None
        );
        assert!(median_stop(&[(1, 0.9), (2, 0.95)], &finished, &rule, Direction::Min).is_some());
        // Not enough finished trials to take a median over.
        assert_eq!(
            median_stop(&[(1, 0.1), (2, 0.2)], &finished[..1], &rule, Direction::Max),
            None
        );
        // Finished trials that reported nothing by the step do not count.
        assert_eq!(
            median_stop(
                &[(1, 0.1), (2, 0.2)],
                &[vec![(5, 1.0)], vec![(6, 1.0)]],
                &rule,
                Direction::Max
            ),
            None
        );
        // Reports without steps count by place.
        assert_eq!(
            reports([(None, 1.0), (None, 2.0)]),
            vec![(1, 1.0), (2, 2.0)]
        );
        assert_eq!(reports([(Some(10), 1.0)]), vec![(10, 1.0)]);
    }
}
