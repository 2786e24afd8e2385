//! Model prices: what a Bedrock call costs.
//!
//! Invariants: money is integer nano-dollars, a price is nano-dollars per
//! million tokens, every cost rounds up (once, over the sum of all parts), and
//! a model without a price is an [`UnknownModel`] error, never a silent zero.
//!
//! A [`Catalog`] is immutable once built; share it behind `Arc`. It starts
//! from the embedded catalog (`pricing/catalog.toml`, whose header states the
//! source and date of its prices and the file schema); a pricing file named in
//! tollgate's config overrides or extends it, and is checked whole at load so
//! nothing about it fails at request time. A model id resolves, in order:
//! configured application-inference-profile ARN → other Bedrock ARNs by their
//! structure → exact catalog entry → inference-profile prefix (`us.`,
//! `global.`, …) plus base model, with that prefix's premium.
//!
//! The engine asks a [`PriceBook`]; both [`Catalog`] and the fixed table
//! [`StaticPrices`] (tests, examples) are one.

mod arn;
mod catalog;
mod file;
mod metered;
mod price;
mod rates;
mod regional;
mod static_prices;

pub use arn::is_application_profile;
pub use catalog::{Catalog, PricingError, Resolved, UnknownModel};
pub use file::{CatalogError, CatalogMeta};
pub use metered::{LatencyMode, Metered, ServedAs, ServiceTier};
pub use price::{Price, PriceBook, Usage};
pub use rates::{Charge, Rates, TierBp, hold_cost};
pub use regional::RegionalCatalogs;
pub use static_prices::StaticPrices;

pub use crate::ids::{REGION_PREFIXES, split_region_prefix};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::ModelPrice;
    use crate::money::NanoUsd;
    use crate::pricing::{Charge, LatencyMode, Metered, ServedAs, ServiceTier};

    const SONNET_4: &str = "anthropic.claude-sonnet-4-20250514-v1:0";
    const SONNET_45: &str = "anthropic.claude-sonnet-4-5-20250929-v1:0";
    const NOVA_MICRO: &str = "amazon.nova-micro-v1:0";
    const ARN: &str = "arn:aws:bedrock:us-east-1:111122223333:application-inference-profile/a1b2c3d4e5f6";

    fn usage(input: u64, output: u64, read: u64, write: u64, write_1h: u64) -> Usage {
        Usage {
            input_tokens: input,
            output_tokens: output,
            cache_read_input_tokens: read,
            cache_write_input_tokens: write,
            cache_write_1h_input_tokens: write_1h,
        }
    }

    fn cost(catalog: &Catalog, model: &str, u: Usage) -> u64 {
        catalog.cost(model, &u).expect("priced").get()
    }

    #[test]
    fn resolves_regional_profiles_and_refuses_unknown_models() {
        let prices = StaticPrices::examples();
        let base = prices.price("amazon.nova-micro-v1:0").expect("known");
        assert_eq!(prices.price("us.amazon.nova-micro-v1:0"), Some(base));
        assert_eq!(prices.price("acme.unknown-model"), None);
    }

    #[test]
    fn embedded_catalog_prices_every_required_model() {
        let catalog = Catalog::embedded();
        for id in [
            SONNET_4,
            SONNET_45,
            "anthropic.claude-opus-4-20250514-v1:0",
            "anthropic.claude-opus-4-1-20250805-v1:0",
            "anthropic.claude-3-5-haiku-20241022-v1:0",
            "anthropic.claude-haiku-4-5-20251001-v1:0",
            "anthropic.claude-3-7-sonnet-20250219-v1:0",
            "anthropic.claude-3-haiku-20240307-v1:0",
            NOVA_MICRO,
            "amazon.nova-lite-v1:0",
            "amazon.nova-pro-v1:0",
            "amazon.nova-premier-v1:0",
            "meta.llama3-3-70b-instruct-v1:0",
            "meta.llama3-1-8b-instruct-v1:0",
            "meta.llama4-maverick-17b-instruct-v1:0",
            "meta.llama4-scout-17b-instruct-v1:0",
            "mistral.mistral-large-2402-v1:0",
            "mistral.mistral-small-2402-v1:0",
            "mistral.pixtral-large-2502-v1:0",
        ] {
            let r = catalog.resolve(id).unwrap_or_else(|e| panic!("{e}"));
            assert!(
                r.price.input.get() > 0 && r.price.output.get() >= r.price.input.get(),
                "{id}: {r:?}"
            );
        }
        assert!(catalog.meta().source.contains("us-east-1"), "{:?}", catalog.meta());
        assert!(!catalog.meta().as_of.is_empty());
    }

    #[test]
    fn embedded_anthropic_cache_prices_follow_the_published_multipliers() {
        // Read 0.1x, 5-minute write 1.25x, 1-hour write 2x input: catches typos.
        let catalog = Catalog::embedded();
        for id in catalog
            .model_ids()
            .filter(|id| id.starts_with("anthropic.") && !id.contains("claude-3-haiku"))
        {
            let entry = &catalog.models[id];
            let input = entry.input.0.get();
            assert_eq!(entry.cache_read.map(|p| p.0.get()), Some(input / 10), "{id}");
            assert_eq!(entry.cache_write_5m.map(|p| p.0.get()), Some(input * 5 / 4), "{id}");
            if let Some(p) = entry.cache_write_1h {
                assert_eq!(p.0.get(), input * 2, "{id}");
            }
        }
    }

    #[test]
    fn each_price_component_costs_what_the_list_price_says() {
        let c = Catalog::embedded();
        // Sonnet 4: $3 in, $15 out, $0.30 cache read, $3.75 cache write, per million.
        // 1000 tokens at $3/M = $0.003 = 3_000_000 nano-dollars.
        assert_eq!(cost(&c, SONNET_4, usage(1000, 0, 0, 0, 0)), 3_000_000);
        assert_eq!(cost(&c, SONNET_4, usage(0, 1000, 0, 0, 0)), 15_000_000);
        assert_eq!(cost(&c, SONNET_4, usage(0, 0, 1000, 0, 0)), 300_000);
        assert_eq!(cost(&c, SONNET_4, usage(0, 0, 0, 1000, 0)), 3_750_000);
        // Sonnet 4.5 has a 1-hour TTL at $6/M.
        assert_eq!(cost(&c, SONNET_45, usage(0, 0, 0, 1000, 1000)), 6_000_000);
        // All at once: 2000*3 + 500*15 + 10_000*0.30 + 4000*3.75 ($/M) = 6000+7500+3000+15000 micro-dollars.
        assert_eq!(cost(&c, SONNET_4, usage(2000, 500, 10_000, 4000, 0)), 31_500_000);
        // Nova Micro: $0.035 in, $0.14 out, $0.00875 cache read.
        assert_eq!(cost(&c, NOVA_MICRO, usage(1_000_000, 0, 0, 0, 0)), 35_000_000);
        assert_eq!(cost(&c, NOVA_MICRO, usage(0, 1_000_000, 0, 0, 0)), 140_000_000);
        assert_eq!(cost(&c, NOVA_MICRO, usage(0, 0, 1_000_000, 0, 0)), 8_750_000);
        // One cache-read token is 8.75 nano-dollars: rounds up to 9.
        assert_eq!(cost(&c, NOVA_MICRO, usage(0, 0, 1, 0, 0)), 9);
        // Llama 4 Maverick: $0.24 in, $0.97 out.
        assert_eq!(
            cost(&c, "meta.llama4-maverick-17b-instruct-v1:0", usage(1000, 1000, 0, 0, 0)),
            1_210_000
        );
    }

    #[test]
    fn cache_writes_split_by_ttl_and_missing_prices_never_undercharge() {
        let c = Catalog::embedded();
        // 1000 writes, 400 of them 1h: 600*$3.75/M + 400*$6/M.
        assert_eq!(cost(&c, SONNET_45, usage(0, 0, 0, 1000, 400)), 2_250_000 + 2_400_000);
        // Without the split every write is a 5-minute write.
        assert_eq!(cost(&c, SONNET_45, usage(0, 0, 0, 1000, 0)), 3_750_000);
        // An inconsistent 1h count above the total is charged whole at 1h.
        assert_eq!(cost(&c, SONNET_45, usage(0, 0, 0, 10, 1000)), 6_000_000);
        // Sonnet 4 lists no 1h price: 1h writes fall back to the 5-minute price.
        assert_eq!(cost(&c, SONNET_4, usage(0, 0, 0, 1000, 1000)), 3_750_000);
        // Claude 3 Haiku lists no cache prices: cache tokens pay input ($0.25/M).
        assert_eq!(
            cost(&c, "anthropic.claude-3-haiku-20240307-v1:0", usage(0, 0, 1000, 1000, 0)),
            500_000
        );
    }

    #[test]
    fn cost_rounds_up_once_over_the_sum() {
        // Half a nano-dollar per token each way: one of each is exactly 1, not 2.
        let c = Catalog::empty()
            .with_overrides_str("[models.\"acme.tiny-v1\"]\ninput = 500_000\noutput = 500_000\n", "test")
            .expect("valid");
        assert_eq!(cost(&c, "acme.tiny-v1", usage(1, 1, 0, 0, 0)), 1);
        assert_eq!(cost(&c, "acme.tiny-v1", usage(1, 0, 0, 0, 0)), 1);
        assert_eq!(cost(&c, "acme.tiny-v1", usage(3, 0, 0, 0, 0)), 2);
        assert_eq!(cost(&c, "acme.tiny-v1", usage(0, 0, 0, 0, 0)), 0);
        // Absurd counts saturate rather than wrap.
        let huge = usage(u64::MAX, u64::MAX, u64::MAX, u64::MAX, 0);
        assert_eq!(cost(&Catalog::embedded(), SONNET_4, huge), u64::MAX);
    }

    #[test]
    fn regional_prefixes_resolve_with_their_premium() {
        let c = Catalog::embedded();
        let global = c.resolve(&format!("global.{SONNET_45}")).expect("priced");
        assert_eq!(
            (global.base_model, global.prefix, global.premium_bp),
            (SONNET_45, Some("global"), 0)
        );
        assert_eq!(global.price.input.get(), 3_000_000_000);
        // Geo profiles of Sonnet 4.5 cost 10% more: $3.30 in, $16.50 out.
        for prefix in ["us", "eu", "apac", "jp", "au"] {
            let r = c.resolve(&format!("{prefix}.{SONNET_45}")).expect("priced");
            assert_eq!((r.prefix, r.premium_bp), (Some(prefix), 1000));
            assert_eq!(r.price.input.get(), 3_300_000_000, "{prefix}");
        }
        let us = format!("us.{SONNET_45}");
        assert_eq!(cost(&c, &us, usage(1000, 1000, 0, 0, 0)), 3_300_000 + 16_500_000);
        assert_eq!(cost(&c, &us, usage(0, 0, 1000, 1000, 1000)), 330_000 + 6_600_000);
        // Older models have no geo premium.
        assert_eq!(cost(&c, &format!("eu.{SONNET_4}"), usage(1000, 0, 0, 0, 0)), 3_000_000);
        // Only known prefixes strip.
        assert!(c.resolve(&format!("xx.{SONNET_4}")).is_err());
        assert!(c.resolve("us.").is_err());
    }

    #[test]
    fn arns_resolve_to_their_base_model() {
        let c = Catalog::embedded()
            .with_application_profile(ARN, &format!("us.{SONNET_45}"))
            .expect("valid");
        let r = c.resolve(ARN).expect("mapped");
        assert_eq!((r.base_model, r.premium_bp), (SONNET_45, 1000));
        assert_eq!(cost(&c, ARN, usage(1000, 0, 0, 0, 0)), 3_300_000);
        // Foundation-model and system inference-profile ARNs need no mapping.
        let fm = format!("arn:aws:bedrock:us-east-1::foundation-model/{NOVA_MICRO}");
        assert_eq!(c.resolve(&fm).expect("priced").base_model, NOVA_MICRO);
        let ip = format!("arn:aws:bedrock:us-east-1:111122223333:inference-profile/us.{SONNET_45}");
        assert_eq!(c.resolve(&ip).expect("priced").premium_bp, 1000);
        // An unmapped application profile says how to map it.
        let other = ARN.replace("a1b2c3d4e5f6", "zzz");
        let err = c.resolve(&other).expect_err("unmapped").to_string();
        assert!(err.contains(&other) && err.contains("[application_profiles]"), "{err}");
    }

    #[test]
    fn application_profiles_come_from_the_pricing_file_too() {
        let file = format!("[application_profiles]\n{ARN:?} = {NOVA_MICRO:?}\n");
        let c = Catalog::embedded().with_overrides_str(&file, "test").expect("valid");
        assert_eq!(c.resolve(ARN).expect("mapped").base_model, NOVA_MICRO);
        assert_eq!(c.price(ARN), c.price(NOVA_MICRO));
    }

    #[test]
    fn overrides_replace_and_extend_entries() {
        let file = r#"
            [prefix_premium_bp]
            eu = 500

            [models."amazon.nova-micro-v1:0"]
            input = "$0.04"
            output = 150_000_000

            [models."acme.house-model-v1:0"]
            name = "Our model"
            input = "1"
            output = "2.5"
            cache_read = "0.000000001"
        "#;
        let c = Catalog::embedded().with_overrides_str(file, "test").expect("valid");
        assert_eq!(cost(&c, NOVA_MICRO, usage(1000, 1000, 0, 0, 0)), 40_000 + 150_000);
        // The replaced entry lists no cache price any more: input price applies.
        assert_eq!(cost(&c, NOVA_MICRO, usage(0, 0, 1000, 0, 0)), 40_000);
        let own = c.resolve("acme.house-model-v1:0").expect("added");
        assert_eq!(own.name, Some("Our model"));
        assert_eq!(
            (own.price.input.get(), own.price.output.get()),
            (1_000_000_000, 2_500_000_000)
        );
        assert_eq!(own.price.cache_read.get(), 1);
        // The catalog-wide eu premium now applies to models without their own.
        assert_eq!(
            c.resolve(&format!("eu.{SONNET_4}")).expect("priced").price.input.get(),
            3_150_000_000
        );
        assert_eq!(c.resolve(&format!("eu.{SONNET_45}")).expect("priced").premium_bp, 1000);
        // Everything else is untouched.
        assert_eq!(c.price(SONNET_4), Catalog::embedded().price(SONNET_4));
    }

    #[test]
    fn overrides_load_from_a_file() {
        let dir = std::env::temp_dir().join(format!("tollgate-pricing-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("prices.toml");
        std::fs::write(&path, "[models.\"acme.m\"]\ninput = \"2\"\noutput = \"4\"\n").expect("write");
        let c = Catalog::embedded().with_overrides(&path).expect("valid");
        assert_eq!(cost(&c, "acme.m", usage(1, 1, 0, 0, 0)), 6_000);
        let missing = dir.join("missing.toml");
        let err = Catalog::embedded()
            .with_overrides(&missing)
            .expect_err("missing")
            .to_string();
        assert!(
            err.contains("missing.toml") && err.contains("check the pricing file path"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn unknown_models_are_errors_that_say_how_to_price_them() {
        let c = Catalog::embedded();
        let err = c.cost("us.acme.mystery-v1:0", &Usage::default()).expect_err("unknown");
        assert_eq!(err.model_id(), "us.acme.mystery-v1:0");
        let text = err.to_string();
        assert!(text.contains("no price for model \"us.acme.mystery-v1:0\""), "{text}");
        assert!(text.contains("add a [models.\"acme.mystery-v1:0\"] entry"), "{text}");
        assert!(text.contains("pricing file named in tollgate's config"), "{text}");
        assert!(c.worst_case("acme.mystery", 1, 1).is_err());
        assert_eq!(c.price("acme.mystery"), None);
        // Hostile ids are bounded and escaped in the message.
        let long = format!("x\n{}", "y".repeat(10_000));
        let text = c.resolve(&long).expect_err("unknown").to_string();
        assert!(text.len() < 1_000 && !text.contains('\n'), "{text}");
    }

    #[test]
    fn worst_case_charges_max_output() {
        let c = Catalog::embedded();
        // 1000 in at $3/M + 4096 out at $15/M.
        assert_eq!(
            c.worst_case(SONNET_4, 1000, 4096).expect("priced").get(),
            3_000_000 + 61_440_000
        );
        // With cache points the input may be billed as 1h writes at $6/M.
        let cached = c.worst_case_caching(SONNET_45, 1000, 0).expect("priced").get();
        assert_eq!(cached, 6_000_000);
    }

    #[test]
    fn price_book_applies_premium_and_maps_the_5_minute_write() {
        let c = Catalog::embedded();
        let p = c.price(&format!("us.{SONNET_45}")).expect("priced");
        assert_eq!(
            p,
            ModelPrice {
                input: 3_300_000_000,
                output: 16_500_000_000,
                cache_read: 330_000_000,
                cache_write: 4_125_000_000,
                cache_write_long: 6_600_000_000,
            }
        );
        fn assert_price_book<T: PriceBook>() {}
        assert_price_book::<Catalog>();
    }

    #[test]
    fn bad_pricing_files_say_what_and_where() {
        let check = |text: &str, wanted: &[&str]| {
            let err = Catalog::embedded()
                .with_overrides_str(text, "prices.toml")
                .expect_err("invalid")
                .to_string();
            for w in wanted {
                assert!(err.contains(w), "{w:?} missing from: {err}");
            }
        };
        check(
            "[models.\"amazon.nova-micro-v1:0\"]\ninptu = \"1\"\ninput = \"1\"\noutput = \"1\"\n",
            &[
                "prices.toml",
                "line 2",
                "`models.\"amazon.nova-micro-v1:0\".inptu`",
                "unknown field `inptu`",
                "schema is described",
            ],
        );
        check("[modles]\n", &["`modles`", "unknown field"]);
        check(
            "[models.\"m\"]\ninput = \"1\"\n",
            &["`models.m`", "missing field `output`"],
        );
        check(
            "[models.m]\ninput = 3.0\noutput = \"1\"\n",
            &["`models.m.input`", "float", "\"3\""],
        );
        check(
            "[models.m]\ninput = \"3,00\"\noutput = \"1\"\n",
            &["`models.m.input`", "\"3,00\"", "US dollars"],
        );
        check(
            "[models.m]\ninput = -1\noutput = \"1\"\n",
            &["`models.m.input`", "negative"],
        );
        check("[prefix_premium_bp]\nus = -5\n", &["`prefix_premium_bp.us`"]);
        check(
            "[prefix_premium_bp]\nusa = 5\n",
            &["unknown inference-profile prefix \"usa\"", "known prefixes"],
        );
        check(
            "[prefix_premium_bp]\nus = 20000\n",
            &["20000 basis points", "1000 basis points is +10%"],
        );
        check(
            "[application_profiles]\n\"arn:aws:bedrock:us-east-1:1:inference-profile/x\" = \"m\"\n",
            &["not an application inference profile ARN"],
        );
        check(
            &format!("[application_profiles]\n{ARN:?} = \"acme.nothing\"\n"),
            &["maps", "\"acme.nothing\"", "has no price"],
        );
        check("[models\ninput = 1\n", &["prices.toml, line 1"]);
    }

    #[test]
    fn usd_strings_parse_exactly() {
        assert_eq!(NanoUsd::parse_usd("3.30"), Some(NanoUsd(3_300_000_000)));
        assert_eq!(NanoUsd::parse_usd("$0.00875"), Some(NanoUsd(8_750_000)));
        assert_eq!(NanoUsd::parse_usd("0.000000001"), Some(NanoUsd(1)));
        assert_eq!(NanoUsd::parse_usd("12"), Some(NanoUsd(12_000_000_000)));
        for bad in [
            "",
            ".5",
            "5.",
            "1.2.3",
            "-1",
            "1e3",
            "0.0000000001",
            "99999999999999999999",
            "$",
        ] {
            assert_eq!(NanoUsd::parse_usd(bad), None, "{bad}");
        }
    }

    fn metered(u: Usage, tier: ServiceTier, latency: LatencyMode) -> Metered {
        Metered {
            usage: u,
            served_as: ServedAs { tier, latency },
        }
    }

    fn charge(c: &Catalog, model: &str, m: Metered) -> Charge {
        c.charge(model, &m).unwrap_or_else(|e| panic!("{model}: {e}"))
    }

    #[test]
    fn a_1h_cache_write_is_billed_at_the_1h_price_on_a_geo_profile() {
        // us. Sonnet 4.5: read $0.33, 1h write $6.60 per million (global +10%).
        // 31,000 read + 10,000 1h-written: 31_000*0.33 + 10_000*6.60 = $0.07623,
        // where billing the writes at the 5-minute $4.125 would give $0.05148.
        let c = Catalog::embedded();
        let m = metered(
            usage(0, 0, 31_000, 10_000, 10_000),
            ServiceTier::Standard,
            LatencyMode::Standard,
        );
        let got = charge(&c, &format!("us.{SONNET_45}"), m);
        assert_eq!(got.cost.get(), 76_230_000);
        assert_eq!(got.unit_prices.cache_write_1h.get(), 6_600_000_000);
        assert!(!got.long_context);
    }

    #[test]
    fn above_200k_prompt_tokens_every_token_is_billed_at_the_long_context_price() {
        let c = Catalog::embedded();
        let std = |u| metered(u, ServiceTier::Standard, LatencyMode::Standard);
        // 250,000 in + 1,000 out at $6 / $22.50: $1.5225, not $0.765.
        let long = charge(&c, SONNET_45, std(usage(250_000, 1_000, 0, 0, 0)));
        assert_eq!(long.cost.get(), 1_522_500_000);
        assert!(long.long_context);
        // Exactly 200,000 is not above the line.
        let at = charge(&c, SONNET_45, std(usage(200_000, 1_000, 0, 0, 0)));
        assert_eq!(at.cost.get(), 600_000_000 + 15_000_000);
        // Cache reads count toward the line, and are then billed at $0.60.
        let cached = charge(&c, SONNET_4, std(usage(100_000, 0, 150_000, 0, 0)));
        assert_eq!(cached.cost.get(), 600_000_000 + 90_000_000);
        // The geo premium applies to the long-context prices too: $6.60 in.
        let geo = charge(&c, &format!("eu.{SONNET_45}"), std(usage(250_000, 0, 0, 0, 0)));
        assert_eq!(geo.cost.get(), 1_650_000_000);
    }

    #[test]
    fn priority_costs_175_percent_and_flex_half_of_standard() {
        let c = Catalog::embedded();
        let gpt = "openai.gpt-oss-120b-1:0";
        let u = usage(1_000_000, 1_000_000, 0, 0, 0);
        // Standard $0.15 / $0.60; priority $0.2625 / $1.05; flex $0.075 / $0.30.
        let standard = charge(&c, gpt, metered(u, ServiceTier::Standard, LatencyMode::Standard));
        let priority = charge(&c, gpt, metered(u, ServiceTier::Priority, LatencyMode::Standard));
        let flex = charge(&c, gpt, metered(u, ServiceTier::Flex, LatencyMode::Standard));
        let reserved = charge(&c, gpt, metered(u, ServiceTier::Reserved, LatencyMode::Standard));
        assert_eq!(standard.cost.get(), 750_000_000);
        assert_eq!(priority.cost.get(), 262_500_000 + 1_050_000_000);
        assert_eq!(flex.cost.get(), 75_000_000 + 300_000_000);
        assert_eq!(reserved.cost.get(), standard.cost.get());
        // Latency-optimized Nova Pro: $1 / $4 instead of $0.80 / $3.20.
        let nova = charge(
            &c,
            "amazon.nova-pro-v1:0",
            metered(u, ServiceTier::Standard, LatencyMode::Optimized),
        );
        assert_eq!(nova.cost.get(), 5_000_000_000);
        // A mode the catalog cannot price is an error, so the hold is charged.
        let err = c
            .charge(NOVA_MICRO, &metered(u, ServiceTier::Standard, LatencyMode::Optimized))
            .expect_err("no optimized price");
        assert!(err.to_string().contains("latency-optimized"), "{err}");
        // A hold asked at priority is priced at priority; a flex one at standard.
        let asked = |tier| ServedAs {
            tier,
            latency: LatencyMode::Standard,
        };
        assert_eq!(
            c.hold(gpt, 1_000_000, 1_000_000, false, asked(ServiceTier::Priority))
                .expect("priced")
                .get(),
            1_312_500_000
        );
        assert_eq!(
            c.hold(gpt, 1_000_000, 1_000_000, false, asked(ServiceTier::Flex))
                .expect("priced")
                .get(),
            750_000_000
        );
    }

    #[test]
    fn each_region_has_its_own_prices_and_unknown_regions_are_refused() {
        let u = usage(1_000, 1_000, 0, 0, 0);
        let std = metered(u, ServiceTier::Standard, LatencyMode::Standard);
        // eu. Nova Micro billed from Frankfurt: $0.046 / $0.184.
        let frankfurt = Catalog::embedded().in_region("eu-central-1").expect("priced region");
        assert_eq!(
            charge(&frankfurt, &format!("eu.{NOVA_MICRO}"), std).cost.get(),
            46_000 + 184_000
        );
        // The same call from us-east-1: $0.035 / $0.14.
        assert_eq!(
            charge(&Catalog::embedded(), &format!("us.{NOVA_MICRO}"), std)
                .cost
                .get(),
            35_000 + 140_000
        );
        // GovCloud Sonnet 4.5 on its us-gov. profile: $3.60 / $18, no further geo premium.
        let gov = Catalog::embedded().in_region("us-gov-west-1").expect("priced region");
        let sonnet = format!("us-gov.{SONNET_45}");
        assert_eq!(charge(&gov, &sonnet, std).cost.get(), 3_600_000 + 18_000_000);
        // GovCloud models it does not list cost the base price +20%.
        assert_eq!(charge(&gov, NOVA_MICRO, std).cost.get(), 42_000 + 168_000);
        // Claude 4.5 costs the same in Frankfurt as in us-east-1.
        assert_eq!(
            charge(&frankfurt, SONNET_45, std).cost,
            charge(&Catalog::embedded(), SONNET_45, std).cost
        );
        // The in. prefix resolves.
        assert_eq!(
            Catalog::embedded()
                .resolve(&format!("in.{SONNET_45}"))
                .expect("priced")
                .premium_bp,
            1000
        );
        // A region without prices is refused, saying how to price it.
        let err = Catalog::embedded()
            .in_region("mars-north-1")
            .expect_err("unpriced")
            .to_string();
        assert!(err.contains("mars-north-1") && err.contains("[regions."), "{err}");
        // The price book's version names what was applied, region included.
        assert_ne!(frankfurt.version(), Catalog::embedded().version());
        assert_eq!(Catalog::embedded().version(), Catalog::embedded().version());
    }

    #[test]
    fn usage_reads_converse_responses() {
        let v = serde_json::json!({
            "inputTokens": 12, "outputTokens": 34, "totalTokens": 46,
            "cacheReadInputTokens": 100, "cacheWriteInputTokens": 7
        });
        let u = Usage::read(&v).expect("readable");
        assert_eq!(u, usage(12, 34, 100, 7, 0));
        assert_eq!(u.prompt_tokens(), 119);
        assert!(Usage::read(&serde_json::json!({"inputTokens": -3, "outputTokens": 1})).is_err());
    }
}
