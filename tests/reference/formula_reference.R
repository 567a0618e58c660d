# Reference fits for the formula language (transforms, term forms, factors, contrasts).
#
# Run from the repository root:   Rscript tests/reference/formula_reference.R
# Writes tests/reference/formula_cases.csv, formula_fixtures.csv, formula_sort.csv,
# formula_session.txt and the data files it fits (tests/reference/data/*.csv).
#
# Every data set is written to CSV and read back with read.csv() before fitting, so R
# sees what the Python side sees: text columns become factors with levels in R's own
# sort order on this machine, numbers stay numbers. Each case's formula is the one the
# Python side fits, character for character; where a case sets factor options
# (reference level, level order, sum contrasts) the R side does the same with
# relevel()/factor(levels=)/contrasts=, and `factors` holds the Python config (JSON).
# GLMMs use glmerControl(tolPwrss = 1e-10) and report the RX-based standard errors
# (vcov(use.hessian = FALSE)): see tests/reference/README.md for why.

suppressPackageStartupMessages({
  library(lme4)
  library(mlmRev)
  library(nlme)
})

ref_dir <- file.path("tests", "reference")
data_dir <- file.path(ref_dir, "data")
if (!dir.exists(ref_dir)) stop("run from the repository root")
num <- function(x) sprintf("%.17g", x)

roundtrip <- function(df, name) {
  path <- file.path(data_dir, paste0(name, ".csv"))
  write.csv(df, path, row.names = FALSE)
  read.csv(path, stringsAsFactors = FALSE)
}

data(Contraception, package = "mlmRev")
data(Exam, package = "mlmRev")
data(Orthodont, package = "nlme")
data(cake, package = "lme4")
data(sleepstudy, package = "lme4")

contra <- as.data.frame(Contraception)
contra$use01 <- as.integer(contra$use == "Y")
contra$use <- NULL
contra$woman <- NULL
contra <- roundtrip(contra, "Contraception")
exam <- as.data.frame(Exam)[, c("school", "normexam", "schgend", "vr", "intake", "standLRT", "sex")]
exam <- roundtrip(exam, "Exam")
ortho <- as.data.frame(Orthodont)
ortho$Subject <- as.character(ortho$Subject)
ortho <- roundtrip(ortho, "Orthodont")
cake_df <- as.data.frame(cake)[, c("replicate", "recipe", "angle", "temp")]
cake_df <- roundtrip(cake_df, "cake")
sleep <- as.data.frame(sleepstudy)
sleep$period <- ifelse(sleep$Days < 5, 1L, 2L)
sleep <- roundtrip(sleep, "sleepstudy_period")

datasets <- list(Contraception = contra, Exam = exam, Orthodont = ortho, cake = cake_df,
                 sleepstudy_period = sleep)

# case, data, formula, family, REML, factors (Python config as JSON), R preparation
cases <- list(
  list("contra_quad", "Contraception", "use01 ~ age + I(age^2) + urban + factor(livch) + (1 | district)", "binomial", FALSE, "[]"),
  list("contra_interaction", "Contraception", "use01 ~ age * urban + factor(livch) + (1 | district)", "binomial", FALSE, "[]"),
  list("contra_reference", "Contraception", "use01 ~ age + livch + (1 + urban | district)", "binomial", FALSE,
       '[{"column": "livch", "reference": "3+"}]'),
  list("sleep_poly", "sleepstudy_period", "Reaction ~ poly(Days, 2) + (1 | Subject)", "gaussian", TRUE, "[]"),
  list("sleep_poly3_ml", "sleepstudy_period", "Reaction ~ poly(Days, 3) + (Days | Subject)", "gaussian", FALSE, "[]"),
  list("sleep_polyraw", "sleepstudy_period", "Reaction ~ poly(Days, 2, raw = TRUE) + (Days | Subject)", "gaussian", TRUE, "[]"),
  list("sleep_log_response", "sleepstudy_period", "log(Reaction) ~ Days + (Days | Subject)", "gaussian", TRUE, "[]"),
  list("sleep_sqrt_response", "sleepstudy_period", "sqrt(Reaction) ~ Days + (1 | Subject)", "gaussian", TRUE, "[]"),
  list("sleep_log1p_response", "sleepstudy_period", "log1p(Reaction) ~ Days + (1 | Subject)", "gaussian", FALSE, "[]"),
  list("sleep_exp_response", "sleepstudy_period", "exp(Reaction/1000) ~ Days + (1 | Subject)", "gaussian", TRUE, "[]"),
  list("sleep_I_response", "sleepstudy_period", "I(Reaction/100 - 2) ~ Days + (1 | Subject)", "gaussian", TRUE, "[]"),
  list("sleep_transforms1", "sleepstudy_period", "Reaction ~ log1p(Days) + sqrt(Days) + abs(Days - 4.5) + (1 | Subject)", "gaussian", TRUE, "[]"),
  list("sleep_transforms2", "sleepstudy_period", "Reaction ~ log2(Days + 1) + I((Days - 4.5)^2/10) + (1 | Subject)", "gaussian", TRUE, "[]"),
  list("sleep_transforms3", "sleepstudy_period", "Reaction ~ log10(Days + 1) + exp(Days/10) + (1 | Subject)", "gaussian", TRUE, "[]"),
  list("sleep_transforms4", "sleepstudy_period", "Reaction ~ log(Days + 1) + I(Days * 2 - 1) + (log(Days + 1) | Subject)", "gaussian", TRUE, "[]"),
  list("sleep_factor_slopes", "sleepstudy_period", "Reaction ~ factor(period) + (0 + factor(period) | Subject)", "gaussian", TRUE, "[]"),
  list("sleep_as_numeric", "sleepstudy_period", "Reaction ~ as.numeric(Days) + as.factor(period) + (1 | Subject)", "gaussian", FALSE, "[]"),
  list("ortho_scale", "Orthodont", "distance ~ scale(age) * Sex + (1 + scale(age) || Subject)", "gaussian", TRUE, "[]"),
  list("ortho_colon", "Orthodont", "distance ~ age + age:Sex + (1 | Subject)", "gaussian", FALSE, "[]"),
  list("ortho_factor_numeric", "Orthodont", "distance ~ Sex + factor(age) + (1 | Subject)", "gaussian", TRUE, "[]"),
  list("cake_scale_center", "cake", "angle ~ recipe * scale(temp, scale = FALSE) + (1 | recipe:replicate)", "gaussian", TRUE, "[]"),
  list("exam_nested", "Exam", "normexam ~ standLRT + vr/sex + (1 | school)", "gaussian", TRUE, "[]"),
  list("exam_in", "Exam", "normexam ~ 0 + sex %in% vr + standLRT + (1 | school)", "gaussian", FALSE, "[]"),
  list("exam_power", "Exam", "normexam ~ (standLRT + sex + intake)^2 + (1 | school)", "gaussian", TRUE, "[]"),
  list("exam_minus", "Exam", "normexam ~ standLRT * sex - sex + (standLRT | school)", "gaussian", TRUE, "[]"),
  list("exam_no_intercept", "Exam", "normexam ~ -1 + sex + standLRT + (1 | school)", "gaussian", TRUE, "[]"),
  list("exam_sum", "Exam", "normexam ~ standLRT + vr + schgend + (1 | school)", "gaussian", TRUE,
       '[{"column": "vr", "contrasts": "sum"}, {"column": "schgend", "contrasts": "sum"}]'),
  list("exam_levels", "Exam", "normexam ~ standLRT + intake + (1 | school)", "gaussian", TRUE,
       '[{"column": "intake", "levels": ["mid 50%", "top 25%", "bottom 25%"]}]')
)

prepare <- function(cs, df) {
  contrasts <- NULL
  if (cs == "contra_reference") df$livch <- relevel(factor(df$livch), ref = "3+")
  if (cs == "exam_sum") {
    df$vr <- factor(df$vr)
    df$schgend <- factor(df$schgend)
    contrasts <- list(vr = "contr.sum", schgend = "contr.sum")
  }
  if (cs == "exam_levels") df$intake <- factor(df$intake, levels = c("mid 50%", "top 25%", "bottom 25%"))
  list(df = df, contrasts = contrasts)
}

rows <- list()
add <- function(case, quantity, group, term, value) {
  rows[[length(rows) + 1L]] <<- data.frame(case = case, quantity = quantity, group = group,
                                          term = term, value = num(value), stringsAsFactors = FALSE)
}
case_rows <- list()
for (row in cases) {
  cs <- row[[1]]
  p <- prepare(cs, datasets[[row[[2]]]])
  f <- as.formula(row[[3]])
  if (row[[4]] == "gaussian") {
    m <- lmer(f, data = p$df, REML = row[[5]], contrasts = p$contrasts)
  } else {
    m <- glmer(f, data = p$df, family = binomial(), contrasts = p$contrasts,
               control = glmerControl(tolPwrss = 1e-10))
  }
  msgs <- m@optinfo$conv$lme4$messages
  if (length(msgs)) message(cs, ": lme4 convergence messages: ", paste(msgs, collapse = "; "))
  if (isSingular(m)) message(cs, ": singular fit")
  fe <- fixef(m)
  se <- if (row[[4]] == "gaussian") sqrt(diag(as.matrix(vcov(m)))) else
    suppressWarnings(sqrt(diag(as.matrix(vcov(m, use.hessian = FALSE)))))
  for (t in names(fe)) {
    add(cs, "fixef", "", t, fe[[t]])
    add(cs, "se", "", t, se[[t]])
  }
  vc <- VarCorr(m)
  groups <- names(m@cnms)
  for (k0 in seq_along(vc)) {
    v <- vc[[k0]]
    terms <- colnames(v)
    for (k in seq_along(terms)) add(cs, "variance", groups[k0], terms[k], v[k, k])
    if (length(terms) > 1) {
      cr <- attr(v, "correlation")
      for (a in 1:(length(terms) - 1)) for (b in (a + 1):length(terms))
        add(cs, "correlation", groups[k0], sprintf("cor(%s,%s)", terms[a], terms[b]), cr[a, b])
    }
  }
  if (row[[4]] == "gaussian") add(cs, "sigma", "Residual", "", sigma(m))
  add(cs, "logLik", "", "", as.numeric(logLik(m)))
  add(cs, "nobs", "", "", nobs(m))
  case_rows[[length(case_rows) + 1L]] <- data.frame(
    case = cs, data = row[[2]], formula = row[[3]], family = row[[4]], reml = row[[5]],
    factors = row[[6]], stringsAsFactors = FALSE)
}

# Data-dependent transforms, as R computes them: poly() coefficients and columns,
# including predict() on new values (the three-term recurrence), and scale().
days <- sleep$Days
for (deg in 2:3) {
  P <- poly(days, deg)
  co <- attr(P, "coefs")
  for (k in seq_along(co$alpha)) add(sprintf("poly%d", deg), "poly_alpha", "", as.character(k), co$alpha[k])
  for (k in seq_along(co$norm2)) add(sprintf("poly%d", deg), "poly_norm2", "", as.character(k), co$norm2[k])
  for (r in c(1, 2, 10, 13)) for (k in 1:deg) add(sprintf("poly%d", deg), "poly_column", as.character(r), as.character(k), P[r, k])
  newx <- c(-1, 0.5, 4.25, 12)
  Pn <- predict(P, newx)
  for (r in seq_along(newx)) for (k in 1:deg) add(sprintf("poly%d", deg), "poly_predict", num(newx[r]), as.character(k), Pn[r, k])
}
s <- scale(ortho$age)
add("scale_age", "scale_center", "", "", attr(s, "scaled:center"))
add("scale_age", "scale_scale", "", "", attr(s, "scaled:scale"))

# R's model.matrix() column names and terms (assign) for the term algebra, on the
# Exam data (numbers standLRT, normexam; factors sex, vr, intake, schgend).
algebra <- c(
  "normexam ~ vr/sex", "normexam ~ sex %in% vr", "normexam ~ (vr + sex + standLRT)^2",
  "normexam ~ vr * sex - vr", "normexam ~ 0 + vr:sex", "normexam ~ standLRT:vr",
  "normexam ~ vr:standLRT + standLRT", "normexam ~ -1 + vr", "normexam ~ standLRT %in% vr",
  "normexam ~ standLRT/(vr + sex)", "normexam ~ vr * standLRT + sex - 1", "normexam ~ vr + sex + vr:sex:standLRT",
  "normexam ~ standLRT + vr:sex", "normexam ~ sex + vr:sex:standLRT", "normexam ~ (vr + sex)^3",
  "normexam ~ vr - 1 + 1", "normexam ~ standLRT - standLRT", "normexam ~ 0 + sex + vr",
  "normexam ~ 0 + standLRT + sex:vr", "normexam ~ sex * vr * intake", "normexam ~ (sex + vr + intake)^2 - sex:vr",
  "normexam ~ I(standLRT^2) + log(standLRT + 5) + poly(standLRT, 2) + scale(standLRT)",
  "normexam ~ I(standLRT * 2) + I(standLRT/2) + I(standLRT - 1) + I(-standLRT + 1e5) + I(0.5 * standLRT) + I(standLRT^-1) + I(1/(standLRT + 9))",
  "normexam ~ poly(standLRT, 2, raw = TRUE) + factor(sex) + as.factor(vr):standLRT",
  "normexam ~ scale(standLRT, scale = FALSE) * sex + schgend"
)
for (fo in algebra) {
  mm <- model.matrix(as.formula(fo), exam)
  labels <- c("(Intercept)", attr(terms(as.formula(fo)), "term.labels"))
  asg <- attr(mm, "assign")
  for (k in seq_along(asg)) add(fo, "column", labels[asg[k] + 1], colnames(mm)[k], k)
}

fixtures <- do.call(rbind, rows)
write.csv(fixtures, file.path(ref_dir, "formula_fixtures.csv"), row.names = FALSE)
write.csv(do.call(rbind, case_rows), file.path(ref_dir, "formula_cases.csv"), row.names = FALSE)

# R's sort() of text on this machine, the order factor levels take.
set.seed(20261201)
alphabet <- strsplit(" _-.,+%ABCDEFabcdef0123456789", "")[[1]]
words <- unique(c(vapply(1:300, function(i) paste(sample(alphabet, sample(1:4, 1), replace = TRUE), collapse = ""), ""),
                  "bottom 25%", "mid 50%", "top 25%", "3+", "10", "2", "Male", "Female", "a", "A", "ab", "aB", "Ab"))
write.csv(data.frame(text = sort(words), stringsAsFactors = FALSE), file.path(ref_dir, "formula_sort.csv"),
          row.names = FALSE)

writeLines(c(capture.output(sessionInfo()), "", paste("collation:", Sys.getlocale("LC_COLLATE"),
             "ICU:", capabilities("ICU"))), file.path(ref_dir, "formula_session.txt"))
message("wrote ", nrow(fixtures), " fixture rows for ", length(cases), " cases")
