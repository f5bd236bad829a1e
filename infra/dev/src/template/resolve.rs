//! Intrinsic functions (`!Ref`, `!Sub`, `!GetAtt`) resolved against the local stack, and YAML as JSON.

use super::LOCAL_STACK_NAME;
use serde_json::Value;
use serde_yaml::Value as Yaml;

/// Resolves the intrinsics a bus name uses: a literal, `!Ref` to an `AWS::Events::EventBus`
/// (its `Name`) or to a parameter (its `Default`).
pub(super) struct Resolver<'a> {
    pub(super) document: &'a Yaml,
}

impl Resolver<'_> {
    pub(super) fn string(&self, value: &Yaml) -> Result<String, String> {
        // Matched, not `as_str`: serde_yaml's `as_str` looks through tags.
        if let Yaml::String(text) = value {
            return Ok(text.clone());
        }
        let target = match value {
            Yaml::Tagged(tagged) if tagged.tag == "Ref" => tagged.value.as_str(),
            Yaml::Mapping(map) => map.get("Ref").and_then(Yaml::as_str),
            _ => None,
        }
        .ok_or_else(|| "expected a name or !Ref to an AWS::Events::EventBus".to_string())?;
        if let Some(resource) = self.document.get("Resources").and_then(|r| r.get(target)) {
            let name = resource
                .get("Properties")
                .and_then(|p| p.get("Name"))
                .ok_or_else(|| format!("!Ref {target}: the resource has no Properties.Name"))?;
            return self.name(name).map_err(|message| format!("!Ref {target}: Name: {message}"));
        }
        if let Some(parameter) = self.document.get("Parameters").and_then(|p| p.get(target)) {
            return parameter
                .get("Default")
                .and_then(Yaml::as_str)
                .map(str::to_string)
                .ok_or_else(|| format!("!Ref {target}: the parameter has no Default"));
        }
        Err(format!("!Ref {target}: no such resource or parameter"))
    }

    /// A resource name: a literal, `!Ref AWS::StackName`, or `!Sub` over `${AWS::StackName}`
    /// (as [`LOCAL_STACK_NAME`]).
    pub(super) fn name(&self, value: &Yaml) -> Result<String, String> {
        let (tag, inner) = match value {
            Yaml::String(text) => return Ok(text.clone()),
            Yaml::Tagged(tagged) => (tagged.tag.to_string().trim_start_matches('!').to_string(), &tagged.value),
            Yaml::Mapping(map) if map.len() == 1 => match map.iter().next() {
                Some((Yaml::String(key), inner)) => (key.trim_start_matches("Fn::").to_string(), inner),
                _ => return Err("expected a name, !Ref AWS::StackName or !Sub".to_string()),
            },
            _ => return Err("expected a name, !Ref AWS::StackName or !Sub".to_string()),
        };
        match (tag.as_str(), inner) {
            ("Ref", Yaml::String(target)) if target == "AWS::StackName" => Ok(LOCAL_STACK_NAME.to_string()),
            ("Sub", Yaml::String(text)) => {
                let name = text.replace("${AWS::StackName}", LOCAL_STACK_NAME);
                match name.find("${") {
                    Some(at) => {
                        Err(format!("!Sub {text:?}: only ${{AWS::StackName}} is resolved here, not {}", &name[at..]))
                    }
                    None => Ok(name),
                }
            }
            _ => Err(format!("expected a name, !Ref AWS::StackName or !Sub over ${{AWS::StackName}}, found !{tag}")),
        }
    }

    /// An event source's `Queue`: `!GetAtt <id>.Arn` (or `Fn::GetAtt: [<id>, Arn]`) of an
    /// `AWS::SQS::Queue` in the template; its logical id and the resource.
    pub(super) fn queue(&self, value: &Yaml) -> Result<(String, &Yaml), String> {
        let reference = match value {
            Yaml::Tagged(tagged) if tagged.tag == "GetAtt" => match &tagged.value {
                Yaml::String(text) => Some(text.clone()),
                Yaml::Sequence(parts) => Some(parts.iter().filter_map(Yaml::as_str).collect::<Vec<_>>().join(".")),
                _ => None,
            },
            Yaml::Mapping(map) => map.get("Fn::GetAtt").and_then(|v| match v {
                Yaml::String(text) => Some(text.clone()),
                Yaml::Sequence(parts) => Some(parts.iter().filter_map(Yaml::as_str).collect::<Vec<_>>().join(".")),
                _ => None,
            }),
            _ => None,
        };
        let expected = "expected !GetAtt <an AWS::SQS::Queue of this template>.Arn";
        let reference = reference.ok_or_else(|| expected.to_string())?;
        let target = reference.strip_suffix(".Arn").ok_or_else(|| format!("!GetAtt {reference}: {expected}"))?;
        let resource = self
            .document
            .get("Resources")
            .and_then(|r| r.get(target))
            .ok_or_else(|| format!("!GetAtt {reference}: no such resource"))?;
        if resource.get("Type").and_then(Yaml::as_str) != Some("AWS::SQS::Queue") {
            return Err(format!("!GetAtt {reference}: not an AWS::SQS::Queue"));
        }
        Ok((target.to_string(), resource))
    }
}

pub(super) fn yaml_to_json(value: &Yaml) -> Value {
    match value {
        Yaml::Null => Value::Null,
        Yaml::Bool(b) => Value::Bool(*b),
        Yaml::Number(n) => n.as_i64().map(Value::from).or_else(|| n.as_f64().map(Value::from)).unwrap_or(Value::Null),
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Sequence(items) => Value::Array(items.iter().map(yaml_to_json).collect()),
        Yaml::Mapping(map) => Value::Object(
            map.iter().map(|(k, v)| (k.as_str().unwrap_or_default().to_string(), yaml_to_json(v))).collect(),
        ),
        Yaml::Tagged(tagged) => yaml_to_json(&tagged.value),
    }
}
