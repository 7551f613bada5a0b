//! Helpers several workloads use: running a probe request inside a running container and
//! reading its response. (Images and content: [`crate::images`].) No workload imports another;
//! what two of them share lives here or in `images`.

use anyhow::Context;

use crate::lab::Container;
use crate::probe::{Request, Response, PROBE_PATH};

/// Run `req` with the probe inside `c` (a second process in its namespaces and cgroup) and
/// return the probe's response; any failed operation is an error naming the container.
pub fn exec_probe(c: &dyn Container, req: &Request) -> anyhow::Result<Response> {
    let resp = exec_probe_unchecked(c, req)?;
    check(&resp).with_context(|| format!("container {}", c.id()))?;
    Ok(resp)
}

/// As [`exec_probe`], but failed operations are left in the response for the caller.
pub fn exec_probe_unchecked(c: &dyn Container, req: &Request) -> anyhow::Result<Response> {
    let json = req.to_json();
    let out = c.exec(&[PROBE_PATH, json.as_str()])?;
    if out.exit_code != Some(0) {
        anyhow::bail!(
            "container {}: probe exec exited {:?}: {}",
            c.id(),
            out.exit_code,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Response::from_json(&out.stdout_str()).map_err(|e| anyhow::anyhow!("container {}: {e}", c.id()))
}

/// Error for the first failed operation of a response.
pub fn check(resp: &Response) -> anyhow::Result<()> {
    if let Some((s, e)) = resp.first_error() {
        anyhow::bail!("probe {} {} {}: {} (errno {:?})", s.op, s.phase, s.path.as_deref().unwrap_or(""), e.message, e.errno);
    }
    Ok(())
}

/// The `total` sample of operation `op` (first one): (ns, bytes).
pub fn total_of(resp: &Response, op: &str) -> anyhow::Result<(u64, u64)> {
    resp.samples_of(op, "total")
        .next()
        .map(|s| (s.latency_ns, s.bytes))
        .ok_or_else(|| anyhow::anyhow!("probe response has no {op}/total sample"))
}

/// Typed parameters of a cell, or a failed setup naming the workload.
pub fn params<P: crate::TypedParams>(workload: &str, p: &crate::Params) -> Result<P, crate::SetupError> {
    P::from_params(p).map_err(|e| crate::SetupError::Fail(anyhow::anyhow!("{workload}: {e}")))
}
