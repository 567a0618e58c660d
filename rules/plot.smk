# Stage 4: plots of each fit.

rule plot:
    input:
        predictions=lambda w: out("predictions", model=w.model, version=w.version, replicate=w.replicate,
                                  fmt=PLAN.table_format(w.model)),
        random_effects=lambda w: out("random_effects", model=w.model, version=w.version, replicate=w.replicate,
                                     fmt=PLAN.table_format(w.model)),
        fit_stats=rules.extract.output.fit_stats,
        scaled_residuals=lambda w: out("scaled_residuals", model=w.model, version=w.version, replicate=w.replicate,
                                       fmt=PLAN.table_format(w.model)),
    output:
        **{
            p: report(out("plot", model="{model}", version="{version}", replicate="{replicate}", plot=p),
                      caption=f"../report/{p}.rst", category="{model}", subcategory="{replicate}",
                      labels={"model": "{model}", "replicate": "{replicate}", "plot": p})
            for p in paths.PLOTS
        },
    threads: 1
    resources:
        **resources_of("plot", mem_mb=1000, runtime=10),
    log:
        out("log", rule="plot", name="{model}_{version}_{replicate}"),
    script:
        "../scripts/plot.py"
