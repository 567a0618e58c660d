# The R side of benchmarks/study_throughput.py: the same replicates looped in lme4.
# Reads a CSV with the design's columns and one response column per replicate
# (y1, y2, ...), fits the reference model once, then refits it to every response
# with lme4's refit() (as simr does), taking the numbers a study table needs
# (fixed effects with standard errors and tests, variance components, logLik,
# singularity). The second argument is the test: "wald" takes lme4's own summary of
# each refit; "satterthwaite" fits each replicate with lmerTest's lmer() for its
# Satterthwaite t tests (not refit() then as_lmerModLmerTest(): that builds its
# deviance function from the model frame, which still holds the template's response,
# and gives wrong df with "failed to converge" warnings). A third argument,
# binomial or poisson, makes the model a glmer of that family (Laplace), refitted
# with refit() and read from its summary (Wald z), as simr does.
# Prints "<which loop>: <ms> ms per replicate" and, as a check that the
# replicates are the same ones, the mean of the time estimates (and with
# satterthwaite the mean of their df).
#     Rscript benchmarks/study_throughput.R responses.csv [satterthwaite|wald] [gaussian|binomial|poisson]
suppressPackageStartupMessages(library(lme4))
args <- commandArgs(trailingOnly = TRUE)
test <- if (length(args) > 1) args[2] else "satterthwaite"
family <- if (length(args) > 2) args[3] else "gaussian"
if (family != "gaussian") test <- "wald"
if (test == "satterthwaite") suppressPackageStartupMessages(library(lmerTest))
d <- read.csv(args[1])
ys <- grep("^y[0-9]+$", names(d), value = TRUE)
d$hospital_id <- factor(d$hospital_id)
d$patient_id <- factor(d$patient_id)
d$bp <- d[[ys[1]]]
template <- if (family == "gaussian") {
  lme4::lmer(bp ~ time + (1 | hospital_id) + (1 | patient_id), data = d, REML = TRUE)
} else {
  lme4::glmer(bp ~ time + (1 | hospital_id) + (1 | patient_id), data = d, family = family)
}
slope <- numeric(length(ys))
df <- numeric(length(ys))
start <- proc.time()[["elapsed"]]
for (i in seq_along(ys)) {
  if (test == "satterthwaite") {
    d$bp <- d[[ys[i]]]
    m <- suppressMessages(lmerTest::lmer(bp ~ time + (1 | hospital_id) + (1 | patient_id), data = d, REML = TRUE))
  } else {
    m <- suppressMessages(refit(template, d[[ys[i]]]))
  }
  cf <- coef(summary(m))
  vc <- as.data.frame(VarCorr(m))
  ll <- logLik(m)
  sing <- isSingular(m)
  slope[i] <- cf["time", "Estimate"]
  if (test == "satterthwaite") df[i] <- cf["time", "df"]
}
elapsed <- proc.time()[["elapsed"]] - start
label <- if (test == "satterthwaite") "R lmerTest lmer() loop (Satterthwaite t)" else
  if (family == "gaussian") "R lme4 refit loop (Wald)" else sprintf("R lme4 glmer refit loop (%s, Wald z)", family)
cat(sprintf("%s: %.1f ms per replicate (lme4 %s, %d replicates)\n",
            label, 1000 * elapsed / length(ys), packageVersion("lme4"), length(ys)))
cat(sprintf("R mean time estimate: %.10g\n", mean(slope)))
if (test == "satterthwaite") cat(sprintf("R mean time df: %.8g\n", mean(df)))
