//! [`Registry`]: the functions of one app, by id.

use super::Function;
use crate::error::DefinitionError;
use crate::event::EventPayload;
use std::collections::HashMap;

/// The functions of one app, by id. Ids must be unique; failure handlers are included.
#[derive(Clone, Debug, Default)]
pub struct Registry {
    functions: Vec<Function>,
    by_id: HashMap<String, usize>,
}

impl Registry {
    /// Registers `functions` and their failure handlers.
    ///
    /// # Errors
    /// [`DefinitionError::DuplicateFunctionId`] when two share an id.
    pub fn new(functions: impl IntoIterator<Item = Function>) -> Result<Self, DefinitionError> {
        let mut registry = Registry::default();
        for function in functions {
            let failure = function.failure_handler().cloned();
            registry.add(function)?;
            if let Some(failure) = failure {
                registry.add(failure)?;
            }
        }
        Ok(registry)
    }

    fn add(&mut self, function: Function) -> Result<(), DefinitionError> {
        if self.by_id.contains_key(function.id()) {
            return Err(DefinitionError::DuplicateFunctionId(function.id().to_string()));
        }
        self.by_id.insert(function.id().to_string(), self.functions.len());
        self.functions.push(function);
        Ok(())
    }

    /// The function with this id.
    pub fn get(&self, id: &str) -> Option<&Function> {
        self.by_id.get(id).map(|&index| &self.functions[index])
    }

    /// All functions, failure handlers included, in registration order.
    pub fn functions(&self) -> &[Function] {
        &self.functions
    }

    /// The functions `event` starts.
    pub fn triggered_by<'a>(&'a self, event: &'a EventPayload) -> impl Iterator<Item = &'a Function> + 'a {
        self.functions.iter().filter(move |function| function.is_triggered_by(event))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prelude::*;

    async fn noop(_: Event, _: Step) -> Result<(), StepError> {
        Ok(())
    }

    #[test]
    fn duplicate_ids_are_rejected() {
        let a = Function::new("same").on_event("a/b").handler(noop).unwrap();
        let b = Function::new("same").on_event("c/d").handler(noop).unwrap();
        assert_eq!(
            Registry::new([a, b]).unwrap_err().to_string(),
            "duplicate function id `same`: every function of an app needs its own id"
        );
    }
}
