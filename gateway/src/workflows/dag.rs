//! The DAG of a workflow's steps: cycles, ancestors, topological order, and what may happen
//! next in a run (spec/workflow.md §3.1): which steps are runnable and which are skipped,
//! given the outcomes of the steps that finished. Pure; the runner calls [`plan`] after each
//! step ends and starts what it returns.
//!
//! Skip rules, in order, for a step whose dependencies have all finished (completed or
//! skipped; a failed or stopped dependency leaves it pending, so that a retry can go on):
//! 1. not in the selected scenes (partial execution) → skipped, and neutral for rule 4;
//! 2. named in the branch a finished condition step did not choose → skipped;
//! 3. `skip_conditions` given → skipped iff they hold (overrides rule 4, AC-32);
//! 4. every dependency skipped (not counting rule-1 ones) → skipped (the seed's default);
//! 5. otherwise runnable.

use std::collections::{BTreeMap, BTreeSet};

use super::DefinitionError;
use super::condition::{Facts, evaluate_all};
use super::definition::{StepKind, Workflow};

/// The first cycle of `depend_steps`, as step names from a step back to it
/// (`["a", "b", "a"]`), or `None`. Unknown dependencies are ignored.
pub fn find_cycle(wf: &Workflow) -> Option<Vec<String>> {
    let index: BTreeMap<&str, usize> = wf
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();
    let deps: Vec<Vec<usize>> = wf
        .steps
        .iter()
        .map(|s| {
            s.depend_steps
                .iter()
                .filter_map(|d| index.get(d.as_str()).copied())
                .collect()
        })
        .collect();
    // Iterative depth-first search: 0 unvisited, 1 on the stack, 2 done.
    let mut state = vec![0u8; deps.len()];
    for root in 0..deps.len() {
        if state[root] != 0 {
            continue;
        }
        let mut stack: Vec<(usize, usize)> = vec![(root, 0)];
        state[root] = 1;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            if let Some(&d) = deps[node].get(*next) {
                *next += 1;
                match state[d] {
                    0 => {
                        state[d] = 1;
                        stack.push((d, 0));
                    }
                    1 => {
                        let from = stack.iter().position(|(n, _)| *n == d).unwrap_or(0);
                        let mut cycle: Vec<String> = stack[from..]
                            .iter()
                            .map(|(n, _)| wf.steps[*n].name.clone())
                            .collect();
                        // The path follows dependencies (a depends on b); name it in run order.
                        cycle.reverse();
                        cycle.push(cycle[0].clone());
                        return Some(cycle);
                    }
                    _ => {}
                }
            } else {
                state[node] = 2;
                stack.pop();
            }
        }
    }
    None
}

/// Step → every step it depends on, directly or through others. For a DAG (validated).
pub fn ancestors(wf: &Workflow) -> BTreeMap<&str, BTreeSet<&str>> {
    let mut out: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for name in topological_order(wf) {
        let Some(step) = wf.step(name) else { continue };
        let mut all = BTreeSet::new();
        for d in &step.depend_steps {
            all.insert(d.as_str());
            if let Some(a) = out.get(d.as_str()) {
                all.extend(a.iter().copied());
            }
        }
        out.insert(name, all);
    }
    out
}

/// Every step that depends on `step`, directly or through others (what a retry of `step`
/// runs again after it).
pub fn descendants<'a>(wf: &'a Workflow, step: &str) -> BTreeSet<&'a str> {
    let mut out = BTreeSet::new();
    let mut todo = vec![step.to_owned()];
    while let Some(n) = todo.pop() {
        for s in &wf.steps {
            if s.depend_steps.contains(&n) && out.insert(s.name.as_str()) {
                todo.push(s.name.clone());
            }
        }
    }
    out
}

/// The steps in an order where each comes after its dependencies (Kahn's; ties by position
/// in the definition). Steps on a cycle are left out.
pub fn topological_order(wf: &Workflow) -> Vec<&str> {
    let mut waiting: BTreeMap<&str, usize> = BTreeMap::new();
    let mut dependents: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let names: BTreeSet<&str> = wf.steps.iter().map(|s| s.name.as_str()).collect();
    for s in &wf.steps {
        let deps: BTreeSet<&str> = s
            .depend_steps
            .iter()
            .map(String::as_str)
            .filter(|d| names.contains(d))
            .collect();
        waiting.insert(&s.name, deps.len());
        for d in deps {
            dependents.entry(d).or_default().push(&s.name);
        }
    }
    let mut ready: Vec<&str> = wf
        .steps
        .iter()
        .map(|s| s.name.as_str())
        .filter(|n| waiting.get(n) == Some(&0))
        .collect();
    ready.reverse();
    let mut out = Vec::with_capacity(wf.steps.len());
    while let Some(n) = ready.pop() {
        out.push(n);
        for d in dependents.get(n).into_iter().flatten() {
            if let Some(w) = waiting.get_mut(d) {
                *w -= 1;
                if *w == 0 {
                    ready.insert(0, d);
                }
            }
        }
    }
    out
}

/// How a step ended (or that it is under way), as the runner records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepOutcome {
    /// Started and not ended (running, waiting for input, stopping).
    Active,
    Completed,
    /// A condition step that completed: `true` ran `if_then_steps`, `false` the else branch.
    Branch(bool),
    Skipped,
    Failed,
    Stopped,
}

/// Why a step is skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// Not in the scenes a partial run selected.
    NotSelected,
    /// In the branch condition step `condition` did not choose.
    Branch { condition: String },
    /// Its `skip_conditions` held.
    SkipConditions,
    /// All its dependencies were skipped (the seed's default rule).
    DependenciesSkipped,
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SkipReason::NotSelected => write!(f, "not in the selected scenes"),
            SkipReason::Branch { condition } => {
                write!(f, "in the branch condition step {condition} did not choose")
            }
            SkipReason::SkipConditions => write!(f, "its skip conditions held"),
            SkipReason::DependenciesSkipped => write!(f, "all its dependencies were skipped"),
        }
    }
}

/// What may happen next.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Start these now (parallel branches together).
    pub runnable: Vec<String>,
    /// Record these as skipped (in order; later ones may be skipped because of earlier).
    pub skipped: Vec<(String, SkipReason)>,
    /// These fail before they start: their skip conditions could not be evaluated.
    pub failed: Vec<(String, String)>,
}

/// The steps of the scenes named (partial execution, §2.15); every step when `scenes` is
/// empty. An unknown scene is refused, naming it.
pub fn selection(
    wf: &Workflow,
    scenes: &[String],
) -> Result<Option<BTreeSet<String>>, DefinitionError> {
    if scenes.is_empty() {
        return Ok(None);
    }
    let all = wf
        .policy
        .as_ref()
        .map(|p| p.scenes.as_slice())
        .unwrap_or_default();
    let mut out = BTreeSet::new();
    for (i, name) in scenes.iter().enumerate() {
        let Some(scene) = all.iter().find(|s| &s.scene_name == name) else {
            let known: Vec<&str> = all.iter().map(|s| s.scene_name.as_str()).collect();
            return Err(DefinitionError::new(
                format!("scenes[{i}]"),
                format!(
                    "unknown scene {name:?} (the workflow's scenes: {})",
                    if known.is_empty() {
                        "none".into()
                    } else {
                        known.join(", ")
                    }
                ),
            ));
        };
        out.extend(scene.scene_steps.iter().cloned());
    }
    Ok(Some(out))
}

/// What to do next, given each step's outcome so far (steps absent are pending), the
/// selected steps of a partial run (`None`: all), and the facts skip conditions are
/// evaluated against. Steps are decided in topological order, so a skip propagates in one
/// call; a runnable step's dependents wait for it.
pub fn plan(
    wf: &Workflow,
    outcomes: &BTreeMap<String, StepOutcome>,
    selected: Option<&BTreeSet<String>>,
    facts: &Facts,
) -> Plan {
    let mut plan = Plan::default();
    // Outcomes including this plan's skips.
    let mut now: BTreeMap<&str, StepOutcome> =
        outcomes.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    let is_selected = |name: &str| selected.is_none_or(|s| s.contains(name));
    for name in topological_order(wf) {
        if now.contains_key(name) {
            continue;
        }
        let Some(step) = wf.step(name) else { continue };
        let finished = step.depend_steps.iter().all(|d| {
            matches!(
                now.get(d.as_str()),
                Some(StepOutcome::Completed | StepOutcome::Branch(_) | StepOutcome::Skipped)
            )
        });
        if !finished {
            continue;
        }
        let decision = if !is_selected(name) {
            Err(SkipReason::NotSelected)
        } else if let Some(condition) = unchosen_branch(wf, name, &now) {
            Err(SkipReason::Branch { condition })
        } else if !step.policy.skip_conditions.is_empty() {
            match evaluate_all(&step.policy.skip_conditions, facts) {
                Ok(true) => Err(SkipReason::SkipConditions),
                Ok(false) => Ok(()),
                Err(e) => {
                    plan.failed
                        .push((name.to_owned(), format!("its skip conditions: {e}")));
                    continue;
                }
            }
        } else {
            let counted: Vec<&String> = step
                .depend_steps
                .iter()
                .filter(|d| is_selected(d))
                .collect();
            if !counted.is_empty()
                && counted
                    .iter()
                    .all(|d| now.get(d.as_str()) == Some(&StepOutcome::Skipped))
            {
                Err(SkipReason::DependenciesSkipped)
            } else {
                Ok(())
            }
        };
        match decision {
            Ok(()) => plan.runnable.push(name.to_owned()),
            Err(reason) => {
                now.insert(name, StepOutcome::Skipped);
                plan.skipped.push((name.to_owned(), reason));
            }
        }
    }
    plan
}

/// The finished condition step whose unchosen branch names `step`, if any.
fn unchosen_branch(wf: &Workflow, step: &str, now: &BTreeMap<&str, StepOutcome>) -> Option<String> {
    wf.steps.iter().find_map(|c| {
        let StepKind::Condition(p) = &c.kind else {
            return None;
        };
        let Some(StepOutcome::Branch(chosen)) = now.get(c.name.as_str()) else {
            return None;
        };
        let unchosen = if *chosen {
            &p.else_then_steps
        } else {
            &p.if_then_steps
        };
        unchosen.iter().any(|s| s == step).then(|| c.name.clone())
    })
}
