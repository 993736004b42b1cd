//! The cluster a command names, as people write it: `name`,
//! `namespace:name` (as in addresses), or `name` with `-n/--namespace` (as
//! clusterctl takes it). A bare name is accepted whenever exactly one known
//! cluster has it, whatever its namespace; several are an error that lists
//! them. Every command that takes a cluster resolves it here.

use crate::resource::{ClusterId, Target};

use super::CliError;

/// The cluster key (`name`, or `namespace:name` outside `default`) of the
/// cluster `given` names among `known` keys. An unknown cluster resolves to
/// the key it would have, for the command to report with its own context.
pub(crate) fn resolve(
    given: &str,
    namespace: Option<&str>,
    known: &[String],
) -> Result<String, CliError> {
    if let Some(ns) = namespace {
        if let Some((other, _)) = given.split_once(':') {
            if other != ns {
                return Err(CliError::Usage(format!(
                    "cluster {given:?} is in namespace {other:?}, but --namespace says {ns:?}: give one of them"
                )));
            }
            return Ok(given.to_string());
        }
        return Ok(ClusterId::new(ns, given).key());
    }
    if given.contains(':') {
        return Ok(given.to_string());
    }
    let matches: Vec<&String> = known
        .iter()
        .filter(|k| ClusterId::from_key(k).name == given)
        .collect();
    match matches.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Ok(given.to_string()),
        many => Err(CliError::Usage(format!(
            "{} clusters are named {given:?}: {}; name one as namespace:name or with -n NAMESPACE",
            many.len(),
            many.iter()
                .map(|k| k.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// `--target` clusters written as people write clusters (a bare name of a
/// cluster in another namespace), resolved to their keys among `known`.
pub(crate) fn resolve_targets(targets: &mut [Target], known: &[String]) -> Result<(), CliError> {
    for t in targets {
        if let Target::Cluster(key) = t {
            *key = resolve(key, None, known)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_namespaces_and_ambiguity() {
        let known = vec![
            "fleet:alpha".to_string(),
            "beta".to_string(),
            "a:gamma".to_string(),
            "b:gamma".to_string(),
        ];
        assert_eq!(resolve("alpha", None, &known).unwrap(), "fleet:alpha");
        assert_eq!(resolve("beta", None, &known).unwrap(), "beta");
        assert_eq!(
            resolve("alpha", Some("fleet"), &known).unwrap(),
            "fleet:alpha"
        );
        assert_eq!(resolve("beta", Some("default"), &known).unwrap(), "beta");
        assert_eq!(resolve("fleet:alpha", None, &known).unwrap(), "fleet:alpha");
        assert_eq!(resolve("gamma", Some("b"), &known).unwrap(), "b:gamma");
        assert_eq!(resolve("nope", None, &known).unwrap(), "nope");
        let e = resolve("gamma", None, &known).unwrap_err().to_string();
        assert!(e.contains("a:gamma, b:gamma") && e.contains("-n"), "{e}");
        assert!(resolve("fleet:alpha", Some("other"), &known).is_err());
    }
}
