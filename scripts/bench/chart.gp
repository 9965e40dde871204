# Bar chart of one bench run; driven by scripts/bench/bench.py, which passes:
#   bwfile, iopsfile  data files (either may be ''): a header row of target names, then
#                     "workload label" value... (MiB/s resp. thousands of IOPS)
#   outfile           PNG to write
#   ntargets          number of value columns
#   charttitle        overall title
panels = (bwfile ne '') + (iopsfile ne '')
set terminal pngcairo size (panels * 800),700 font "sans,10" noenhanced
set output outfile
set multiplot layout 1,panels title charttitle
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set key top right autotitle columnheader
set grid ytics
set yrange [0:*]
set xtics rotate by -25 scale 0

if (bwfile ne '') {
  set title "Throughput (MiB/s, higher is better)"
  set ylabel "MiB/s"
  plot for [i=2:ntargets+1] bwfile using i:xtic(1)
}
if (iopsfile ne '') {
  set title "IOPS (thousands, higher is better)"
  set ylabel "kIOPS"
  plot for [i=2:ntargets+1] iopsfile using i:xtic(1)
}
unset multiplot
