//! `proxy_retention`: evicts proxied images over their proxy's size bound (least
//! recently used first) or unused for longer than its idle bound. Scheduled when the
//! first proxy is added; garbage collection reclaims the evicted images' blobs.

use async_trait::async_trait;

use super::Stores;
use crate::{Finished, JobContext};

pub struct ProxyRetention {
    stores: Stores,
}

impl ProxyRetention {
    pub fn new(stores: Stores) -> Self {
        ProxyRetention { stores }
    }
}

#[async_trait]
impl crate::Action for ProxyRetention {
    fn name(&self) -> &'static str {
        "proxy_retention"
    }

    async fn run(&self, ctx: &JobContext) -> anyhow::Result<Finished> {
        let mut lines = Vec::new();
        let evicted =
            wharf_proxy::admin::enforce_retention(self.stores.meta.as_ref(), |l| lines.push(l))
                .await?;
        for l in lines {
            ctx.log(l).await;
        }
        Ok(Finished::Done(format!(
            "{} proxied images evicted ({} bytes); garbage collection reclaims their blobs",
            evicted.images, evicted.bytes
        )))
    }
}
