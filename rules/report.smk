# The report: `snakemake --report results/report.html` after a run. Snakemake shows a CSV
# only as a download, so the result tables get an HTML page each, shown as a table.


rule report_tables:
    input:
        **{key: t[0] for key, t in report_tables().items()},
    output:
        **{
            key: report(
                report_table_path(key), caption=f"../report/{t[5]}.rst", category=t[2], subcategory=t[3], labels=t[4]
            )
            for key, t in report_tables().items()
        },
    log:
        out("log", rule="report_tables", name="report_tables"),
    params:
        titles={key: t[1] for key, t in report_tables().items()},
    script:
        "../scripts/report_tables.py"
