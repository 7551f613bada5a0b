//! Helpers several workloads use: running a probe request inside a running container and
//! reading its response. (Images and content: [`crate::images`].) No workload imports another;
//! what two of them share lives here or in `images`.

use std::time::Duration;

use anyhow::Context;

use crate::lab::{Container, ContainerSpec, Image, Lab};
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

/// Run a container of `img` whose probe holds until SIGTERM and then does the work (`spec`'s
/// request starts with `Op::Hold`), and measure what the work added to the container's layer:
/// the layer is kept past the stop, its usage read once the probe holds and again once the
/// container is gone, then removed, also when a step failed. `before_stop` runs while the probe
/// holds (after the first usage reading); `after_stop` gets the probe's checked response before
/// the layer is removed and returns the samples, to which `usage_delta_bytes` is added.
pub fn layer_usage_around_stop<B>(
    lab: &dyn Lab,
    img: &Image,
    spec: ContainerSpec,
    before_stop: impl FnOnce() -> B,
    after_stop: impl FnOnce(&Response, B) -> anyhow::Result<crate::RepSamples>,
) -> anyhow::Result<crate::RepSamples> {
    let d = lab.driver();
    let c = lab.start(img, &ContainerSpec { keep_layer: true, ..spec })?;
    let layer = c.layer_key().to_string();
    let measured = (|| -> anyhow::Result<crate::RepSamples> {
        c.wait_ready(Duration::from_secs(60))?;
        let before = d.usage(&layer)?.bytes;
        let b = before_stop();
        let resp = c.stop()?.probe_response()?;
        check(&resp)?;
        let after = d.usage(&layer)?.bytes;
        let mut samples = after_stop(&resp, b)?;
        samples.push(("usage_delta_bytes", after.saturating_sub(before) as f64));
        Ok(samples)
    })();
    // `stop` has unmounted and deleted the container; the kept layer goes now.
    let removed = d.remove(&layer);
    let samples = measured?;
    removed.with_context(|| format!("remove the layer {layer} of a stopped container"))?;
    Ok(samples)
}
