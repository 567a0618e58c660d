# lme4's side of benchmarks/large_fit.py: fit one LMM to a CSV file, time the fit.
#
#     Rscript benchmarks/large_fit.R data.csv "bp ~ time + (1 | g1) + (1 | g2)" g1 g2
#
# Prints "read_s <s>", "fit_s <s>" and "fit_cpu_s <s>" (lmer alone, by REML, lme4's
# default controls; wall and CPU time) and one "fixef <term> <value>" line per fixed
# effect. Needs lme4; reads with
# data.table::fread when installed (R has no Parquet reader without arrow).

suppressPackageStartupMessages(library(lme4))
args <- commandArgs(trailingOnly = TRUE)
path <- args[1]
form <- as.formula(args[2])
groups <- args[-(1:2)]

start <- proc.time()[["elapsed"]]
data <- if (requireNamespace("data.table", quietly = TRUE)) {
  data.table::fread(path, data.table = FALSE)
} else {
  read.csv(path)
}
for (g in groups) data[[g]] <- factor(data[[g]])
read_s <- proc.time()[["elapsed"]] - start

start <- proc.time()
model <- lmer(form, data, REML = TRUE)
used <- proc.time() - start

cat(sprintf("read_s %.3f\nfit_s %.3f\nfit_cpu_s %.3f\n", read_s, used[["elapsed"]],
            used[["user.self"]] + used[["sys.self"]]))
fe <- fixef(model)
cat(sprintf("fixef %s %.10g\n", names(fe), fe), sep = "")
