//! A plan: the steps of a build as a DAG, and what the store already has of them.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::hash::StepKey;
use crate::store::{OutputRef, Store};

use super::{EngineError, Step, StepInput};

/// Steps in dependency order (parents first).
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    steps: Vec<Step>,
}

/// What a step will do.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub(crate) enum StepStatus {
    /// The store has its record and outputs: it will not run.
    Cached {
        /// Its key.
        key: StepKey,
        /// Its outputs.
        #[serde(skip)]
        outputs: BTreeMap<String, OutputRef>,
    },
    /// Its key is known and not in the store: it will run.
    WillRun {
        /// Its key.
        key: StepKey,
        /// Why, in the step's terms (what changed since the step's last record).
        why: Vec<String>,
    },
    /// Its key depends on outputs of steps that will run first.
    Pending {
        /// The steps it waits for.
        waiting_for: Vec<String>,
        /// What already differs from its last record, as far as known.
        why: Vec<String>,
    },
}

/// One step of a plan with its status.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub(crate) struct PlannedStep {
    /// The step's name.
    pub(crate) name: String,
    /// Its status.
    #[serde(flatten)]
    pub(crate) status: StepStatus,
}

impl Plan {
    /// Checks the steps (unique names, known outputs, no cycles) and orders them.
    pub(crate) fn new(steps: Vec<Step>) -> Result<Self, EngineError> {
        let mut by_name: HashMap<&str, &Step> = HashMap::new();
        for step in &steps {
            step.validate()?;
            if by_name.insert(step.name.as_str(), step).is_some() {
                return Err(EngineError::DuplicateStep {
                    step: step.name.clone(),
                });
            }
        }
        for step in &steps {
            for input in step.inputs.values() {
                if let StepInput::Output {
                    step: parent,
                    output,
                } = input
                {
                    let declared = by_name
                        .get(parent.as_str())
                        .is_some_and(|p| p.outputs.contains(output));
                    if !declared {
                        return Err(EngineError::UnknownOutput {
                            step: step.name.clone(),
                            parent: parent.clone(),
                            output: output.clone(),
                        });
                    }
                }
            }
        }
        // Kahn's algorithm, taking ready steps in their given order so the result is stable.
        let mut placed: BTreeSet<String> = BTreeSet::new();
        let mut ordered = Vec::with_capacity(steps.len());
        let mut remaining: Vec<Step> = steps;
        while !remaining.is_empty() {
            let ready = remaining
                .iter()
                .position(|s| s.parents().all(|p| placed.contains(p)));
            let Some(index) = ready else {
                return Err(EngineError::Cycle {
                    steps: remaining.iter().map(|s| s.name.clone()).collect(),
                });
            };
            let step = remaining.remove(index);
            placed.insert(step.name.clone());
            ordered.push(step);
        }
        Ok(Self { steps: ordered })
    }

    /// The steps, parents first.
    #[must_use]
    pub(crate) fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// Computes every step's key bottom-up and looks it up. A step is cached when its record
    /// and all its outputs are stored; it will run when its key is known but not stored; it is
    /// pending when a parent will run first. Runs nothing and starts no container.
    pub(crate) async fn status(&self, store: &impl Store) -> Result<Vec<PlannedStep>, EngineError> {
        let mut known: BTreeMap<String, BTreeMap<String, OutputRef>> = BTreeMap::new();
        let mut planned = Vec::with_capacity(self.steps.len());
        for step in &self.steps {
            let earlier = store.latest(&step.name).await?;
            let status = if let Some(derivation) = step.derivation(&known) {
                let key = derivation.key();
                match cached_outputs(store, &key).await? {
                    Some(outputs) => {
                        known.insert(step.name.clone(), outputs.clone());
                        StepStatus::Cached { key, outputs }
                    }
                    None => {
                        let why = match &earlier {
                            Some(record) if record.key == key => {
                                vec!["its outputs are no longer in the store".to_owned()]
                            }
                            Some(record) => derivation.changes_since(&record.derivation),
                            None => vec!["no earlier run of this step is recorded".to_owned()],
                        };
                        StepStatus::WillRun { key, why }
                    }
                }
            } else {
                let waiting_for: Vec<String> = step
                    .parents()
                    .filter(|p| !known.contains_key(*p))
                    .map(str::to_owned)
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect();
                // Compare what is known: the derivation with the pending outputs left as they
                // were last time.
                let why = earlier.map_or_else(Vec::new, |record| {
                    let mut assumed = known.clone();
                    for (name, input) in &record.derivation.inputs {
                        if let (
                            Some(StepInput::Output {
                                step: parent,
                                output,
                            }),
                            crate::hash::InputRef::Output { digest, tree, .. },
                        ) = (step.inputs.get(name), input)
                        {
                            assumed
                                .entry(parent.clone())
                                .or_default()
                                .entry(output.clone())
                                .or_insert(OutputRef {
                                    digest: *digest,
                                    size: 0,
                                    tree: *tree,
                                });
                        }
                    }
                    step.derivation(&assumed)
                        .map(|d| d.changes_since(&record.derivation))
                        .unwrap_or_default()
                });
                StepStatus::Pending { waiting_for, why }
            };
            planned.push(PlannedStep {
                name: step.name.clone(),
                status,
            });
        }
        Ok(planned)
    }
}

/// The outputs of `key`'s record, if the record and every output are stored.
pub(super) async fn cached_outputs(
    store: &impl Store,
    key: &StepKey,
) -> Result<Option<BTreeMap<String, OutputRef>>, EngineError> {
    let Some(record) = store.record(key).await? else {
        return Ok(None);
    };
    for output in record.outputs.values() {
        if !store.contains(&output.digest).await? {
            return Ok(None);
        }
    }
    Ok(Some(record.outputs))
}
