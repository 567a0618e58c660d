# Reference fit for a pilot study with a cluster-level factor (glmm_steps.pilot): nlme's
# Orthodont, distance ~ age + Sex + (age | Subject), REML, as lme4 fits it.
#
# Run from the repository root:   Rscript tests/reference/pilot_reference.R
# Reads tests/reference/data/Orthodont.csv (written by formula_reference.R) with
# read.csv(), so Sex is a factor with levels in sort order (Female, Male) as the Python
# reader makes it; writes tests/reference/pilot_fixtures.csv and pilot_session.txt.

suppressPackageStartupMessages(library(lme4))

ref_dir <- file.path("tests", "reference")
if (!dir.exists(ref_dir)) stop("run from the repository root")
num <- function(x) sprintf("%.17g", x)

ortho <- read.csv(file.path(ref_dir, "data", "Orthodont.csv"), stringsAsFactors = TRUE)
fit <- lmer(distance ~ age + Sex + (age | Subject), data = ortho, REML = TRUE)
vc <- as.data.frame(VarCorr(fit))
fe <- fixef(fit)
units <- table(ortho$Sex[!duplicated(ortho$Subject)])
rows <- rbind(
  data.frame(quantity = "fixef", group = "", term = names(fe), value = num(fe)),
  data.frame(
    quantity = ifelse(is.na(vc$var2), "sd", "cor"),
    group = vc$grp,
    term = ifelse(is.na(vc$var2), ifelse(is.na(vc$var1), "(Intercept)", vc$var1), paste(vc$var1, vc$var2, sep = ".")),
    value = num(vc$sdcor)
  ),
  data.frame(quantity = "units", group = "Subject", term = names(units), value = as.character(as.integer(units)))
)
write.csv(rows, file.path(ref_dir, "pilot_fixtures.csv"), row.names = FALSE)
writeLines(capture.output(sessionInfo()), file.path(ref_dir, "pilot_session.txt"))
